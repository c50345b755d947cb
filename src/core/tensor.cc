#include "src/core/tensor.h"

#include <stdexcept>

namespace moe {

int64_t dtype_bytes(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kI32: return "i32";
  }
  return "?";
}

int64_t Tensor::numel() const {
  if (ndim == 0) return 0;  // an empty Tensor{}: no memory, no elements (there are no 0-d tensors)
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

int64_t Tensor::size(int dim) const {
  const int d = dim < 0 ? ndim + dim : dim;
  if (d < 0 || d >= ndim) throw std::logic_error("Tensor::size(" + std::to_string(dim) + ") of " + shape_string());
  return shape[d];
}

std::string Tensor::shape_string() const {
  return shape_text(std::vector<int64_t>(shape.begin(), shape.begin() + ndim));
}

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

float* Tensor::f32() const {
  if (dtype != DType::kF32) throw std::logic_error(std::string("tensor is ") + dtype_name(dtype) + ", not f32");
  return static_cast<float*>(data);
}

int32_t* Tensor::i32() const {
  if (dtype != DType::kI32) throw std::logic_error(std::string("tensor is ") + dtype_name(dtype) + ", not i32");
  return static_cast<int32_t*>(data);
}

Tensor Tensor::reshaped(std::initializer_list<int64_t> new_shape) const {
  if (new_shape.size() > kMaxDims) throw std::logic_error("Tensor::reshaped: too many dims");
  Tensor t = *this;
  t.ndim = static_cast<int>(new_shape.size());
  int i = 0;
  for (int64_t s : new_shape) t.shape[i++] = s;
  if (t.numel() != numel()) {
    throw std::logic_error("Tensor::reshaped " + shape_string() + " -> " + t.shape_string() + ": numel differs");
  }
  return t;
}

Tensor Tensor::rows(int64_t begin, int64_t count) const {
  if (ndim < 1 || begin < 0 || count < 0 || begin + count > shape[0]) {
    throw std::logic_error("Tensor::rows(" + std::to_string(begin) + ", " + std::to_string(count) + ") of " +
                           shape_string());
  }
  Tensor t = *this;
  const int64_t row_elems = shape[0] ? numel() / shape[0] : 0;
  t.data = static_cast<char*>(data) + begin * row_elems * dtype_bytes(dtype);
  t.shape[0] = count;
  return t;
}

Tensor view_of(void* data, const std::vector<int64_t>& shape, DType dtype, Device device) {
  if (shape.empty() || shape.size() > static_cast<size_t>(Tensor::kMaxDims)) {
    throw std::logic_error("view_of: 1 to 4 dims, not " + std::to_string(shape.size()));
  }
  Tensor t;
  t.data = data;
  t.ndim = static_cast<int>(shape.size());
  for (size_t d = 0; d < shape.size(); ++d) t.shape[d] = shape[d];
  t.dtype = dtype;
  t.device = device;
  return t;
}

}  // namespace moe
