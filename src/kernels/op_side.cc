// Side: where an op-table case makes its inputs and names its outputs, on the
// host or on the device (op_table.h).
#include <chrono>
#include <random>
#include <sstream>
#include <stdexcept>

#include "src/core/bf16.h"
#include "src/kernels/op_table.h"

#if MOE_TRAIN_HAS_CUDA
#include <cuda_runtime.h>

#include "src/core/cuda_stream.h"
#endif

namespace moe::op_check {

std::string tol_text(const Tol& t) {
  if (t.rtol == 0 && t.atol == 0) return "exact";
  std::ostringstream s;
  s << "rtol " << t.rtol << ", atol " << t.atol << (t.of_max ? " x max" : "");
  if (t.floor > 0) s << " + " << t.floor;
  return s.str();
}

std::string dims(std::initializer_list<int64_t> d) { return shape_text(std::vector<int64_t>(d)); }

Side::Side(Device device, std::vector<DType> slots) : pool_(device), device_(device), slots_(std::move(slots)) {
  if (slots_.empty()) throw std::logic_error("op_check: a Side needs the activations' dtype");
}

DType Side::dtype(Kind k) const {
  switch (k) {
    case Kind::kAct:
    case Kind::kAct1:
    case Kind::kAct2:
    case Kind::kAct3: {
      const size_t slot = static_cast<size_t>(k) - static_cast<size_t>(Kind::kAct);
      return slot < slots_.size() ? slots_[slot] : slots_[0];
    }
    case Kind::kF32: return DType::kF32;
    case Kind::kBF16: return DType::kBF16;
    case Kind::kI32: break;
  }
  return DType::kI32;
}

Tol Side::tol(Kind k, Tol f32) const {
  if (dtype(k) == DType::kBF16) f32.rtol = 1e-2;
  return f32;
}

std::vector<float> Side::gaussian(int64_t n, float scale) {
  std::mt19937 gen(static_cast<uint32_t>(1000 + seed_++));
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(gen);
  return v;
}

std::vector<float> Side::uniform(int64_t n, float lo, float hi) {
  std::mt19937 gen(static_cast<uint32_t>(1000 + seed_++));
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(gen);
  return v;
}

std::vector<int32_t> Side::ids(int64_t n, int32_t hi) {
  std::mt19937 gen(static_cast<uint32_t>(1000 + seed_++));
  std::uniform_int_distribution<int32_t> dist(0, hi - 1);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int32_t& x : v) x = dist(gen);
  return v;
}

std::vector<float> Side::stored(Kind kind, std::vector<float> values) const {
  if (dtype(kind) == DType::kBF16)
    for (float& x : values) x = bf16_to_f32(f32_to_bf16(x));
  return values;
}

Tensor Side::tensor(const std::vector<int64_t>& shape, Kind kind, const std::vector<float>& values) {
  const Tensor t = pool_.alloc_shape(shape, dtype(kind));
  if (static_cast<int64_t>(values.size()) != t.numel())
    throw std::logic_error("op_check: values for " + t.shape_string());
  if (t.dtype == DType::kBF16) {
    std::vector<uint16_t> bits(values.size());
    for (size_t i = 0; i < values.size(); ++i) bits[i] = f32_to_bf16(values[i]);
    upload(t, bits.data());
  } else {
    upload(t, values.data());
  }
  return t;
}

Tensor Side::randn(const std::vector<int64_t>& shape, Kind kind, float scale) {
  return tensor(shape, kind, gaussian(numel_of(shape), scale));
}

Tensor Side::i32(const std::vector<int64_t>& shape, const std::vector<int32_t>& values) {
  const Tensor t = pool_.alloc_shape(shape, DType::kI32);
  if (static_cast<int64_t>(values.size()) != t.numel()) throw std::logic_error("op_check: ids for " + t.shape_string());
  upload(t, values.data());
  return t;
}

Tensor Side::zeros(const std::vector<int64_t>& shape, Kind kind) { return pool_.alloc_shape(shape, dtype(kind)); }

void Side::run(const std::function<void()>& op) {
  sync();
  const auto start = std::chrono::steady_clock::now();
  op();
  sync();
  ms_ += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

std::vector<double> Side::values(const Output& o) {
  if (!o.scalar.empty()) return o.scalar;
  const Tensor& t = o.t;
  std::vector<double> out(static_cast<size_t>(t.numel()));
  if (t.dtype == DType::kI32) {
    std::vector<int32_t> v(out.size());
    download(v.data(), t);
    std::copy(v.begin(), v.end(), out.begin());
  } else if (t.dtype == DType::kBF16) {
    std::vector<uint16_t> v(out.size());
    download(v.data(), t);
    for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_f32(v[i]);
  } else {
    std::vector<float> v(out.size());
    download(v.data(), t);
    std::copy(v.begin(), v.end(), out.begin());
  }
  return out;
}

void Side::sync() const {
#if MOE_TRAIN_HAS_CUDA
  if (device_ == Device::kCuda) {
    const cudaError_t e = cudaStreamSynchronize(cuda::stream());
    if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(e));
  }
#endif
}

}  // namespace moe::op_check
