#include "src/core/tensor_pool.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace moe {

TensorPool::~TensorPool() {
  for (void* p : blocks_) std::free(p);
}

Tensor TensorPool::alloc_shape(const std::vector<int64_t>& shape, DType dtype) {
  if (device_ != Device::kCpu) throw std::logic_error("TensorPool: device memory is not built yet");
  if (shape.size() > Tensor::kMaxDims) throw std::logic_error("TensorPool::alloc: too many dims");
  Tensor t;
  t.ndim = static_cast<int>(shape.size());
  for (int i = 0; i < t.ndim; ++i) t.shape[i] = shape[i];
  t.dtype = dtype;
  t.device = device_;
  // 64-byte alignment for vector loads; at least one byte so empty tensors get a distinct pointer.
  const size_t bytes = static_cast<size_t>(t.bytes());
  const size_t padded = (bytes + 63) / 64 * 64 + 64;
  void* p = std::aligned_alloc(64, padded);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, padded);
  blocks_.push_back(p);
  bytes_ += static_cast<int64_t>(padded);
  t.data = p;
  return t;
}

Tensor TensorPool::alloc(std::initializer_list<int64_t> shape, DType dtype) {
  return alloc_shape(std::vector<int64_t>(shape), dtype);
}

void zero(const Tensor& t) {
  if (t.device != Device::kCpu) throw std::logic_error("zero: device tensors are not built yet");
  std::memset(t.data, 0, static_cast<size_t>(t.bytes()));
}


void copy_tensor(const Tensor& dst, const Tensor& src) {
  if (dst.device != Device::kCpu || src.device != Device::kCpu) {
    throw std::logic_error("copy_tensor: device tensors are not built yet");
  }
  if (dst.dtype != src.dtype || dst.numel() != src.numel()) {
    throw std::logic_error("copy_tensor: " + dst.shape_string() + " <- " + src.shape_string());
  }
  std::memcpy(dst.data, src.data, static_cast<size_t>(src.bytes()));
}

}  // namespace moe
