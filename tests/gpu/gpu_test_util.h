// Helpers for GPU tests: device tensors filled from host vectors (fp32, or
// rounded to bf16), read back as fp32, and a tolerance check that reports the
// worst element. Each test holds a CUDA op against the CPU reference
// (src/kernels/cpu/) on random inputs, with the tolerance stated per op.
#pragma once

#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "src/core/bf16.h"
#include "src/core/tensor.h"
#include "src/kernels/cuda/cuda_check.h"
#include "src/kernels/cuda/stream.h"

namespace moe::test {

// A device buffer that frees itself; tensor() views it with a shape and dtype.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) {
    void* p = nullptr;
    cuda::check(cudaMalloc(&p, bytes ? bytes : 1), "test cudaMalloc");
    ptr_.reset(p);
  }
  void* get() const { return ptr_.get(); }

 private:
  struct Free {
    void operator()(void* p) const { cudaFree(p); }
  };
  std::unique_ptr<void, Free> ptr_;
};

struct DeviceTensor {
  std::shared_ptr<DeviceBuffer> buffer;
  Tensor t;
};

// The backend's stream is non-blocking: it does not wait for work on the
// legacy default stream, where cudaMemset and the pageable cudaMemcpy of these
// helpers run (and may still be in flight when they return). Each helper that
// writes device memory therefore waits for the device before handing it out.
inline void settle(const char* what) { cuda::check(cudaDeviceSynchronize(), what); }

inline DeviceTensor device_tensor(const std::vector<int64_t>& shape, DType dtype) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  auto buf = std::make_shared<DeviceBuffer>(static_cast<size_t>(n * dtype_bytes(dtype)));
  cuda::check(cudaMemset(buf->get(), 0, static_cast<size_t>(n * dtype_bytes(dtype))), "test cudaMemset");
  settle("test cudaMemset");
  return {buf, view_of(buf->get(), shape, dtype, Device::kCuda)};
}

// Uploads host fp32 values as `dtype` (F32, or BF16 rounded to nearest-even).
inline DeviceTensor upload(const std::vector<float>& host, const std::vector<int64_t>& shape, DType dtype) {
  DeviceTensor d = device_tensor(shape, dtype);
  if (dtype == DType::kBF16) {
    std::vector<uint16_t> h(host.size());
    for (size_t i = 0; i < host.size(); ++i) h[i] = f32_to_bf16(host[i]);
    cuda::check(cudaMemcpy(d.t.data, h.data(), h.size() * 2, cudaMemcpyHostToDevice), "test upload");
  } else {
    cuda::check(cudaMemcpy(d.t.data, host.data(), host.size() * 4, cudaMemcpyHostToDevice), "test upload");
  }
  settle("test upload");
  return d;
}

inline DeviceTensor upload_i32(const std::vector<int32_t>& host, const std::vector<int64_t>& shape) {
  DeviceTensor d = device_tensor(shape, DType::kI32);
  cuda::check(cudaMemcpy(d.t.data, host.data(), host.size() * 4, cudaMemcpyHostToDevice), "test upload");
  settle("test upload");
  return d;
}

// Waits for the backend's stream, then reads a device tensor back as fp32.
inline std::vector<float> download(const Tensor& t) {
  cuda::check(cudaStreamSynchronize(cuda::stream()), "test sync");
  std::vector<float> out(static_cast<size_t>(t.numel()));
  if (t.dtype == DType::kBF16) {
    std::vector<uint16_t> h(out.size());
    cuda::check(cudaMemcpy(h.data(), t.data, h.size() * 2, cudaMemcpyDeviceToHost), "test download");
    for (size_t i = 0; i < h.size(); ++i) out[i] = bf16_to_f32(h[i]);
  } else if (t.dtype == DType::kI32) {
    std::vector<int32_t> h(out.size());
    cuda::check(cudaMemcpy(h.data(), t.data, h.size() * 4, cudaMemcpyDeviceToHost), "test download");
    for (size_t i = 0; i < h.size(); ++i) out[i] = static_cast<float>(h[i]);
  } else {
    cuda::check(cudaMemcpy(out.data(), t.data, out.size() * 4, cudaMemcpyDeviceToHost), "test download");
  }
  return out;
}

inline std::vector<float> random_vector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

// Rounds through bf16, as a bf16 upload does: the CPU reference then sees the GPU's inputs.
inline std::vector<float> bf16_rounded(std::vector<float> v) {
  for (auto& x : v) x = bf16_to_f32(f32_to_bf16(x));
  return v;
}

// |got - want| <= atol + rtol * |want| for every element; reports the worst one.
inline void check_close(const std::vector<float>& got, const std::vector<float>& want, double rtol, double atol,
                        const std::string& what) {
  REQUIRE(got.size() == want.size());
  size_t worst = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double excess = std::abs(static_cast<double>(got[i]) - want[i]) - (atol + rtol * std::abs(want[i]));
    if (!(excess <= worst_excess) || std::isnan(got[i])) {
      worst_excess = std::isnan(got[i]) ? 1e30 : excess;
      worst = i;
    }
  }
  INFO(what << ": worst element " << worst << " got " << got[worst] << " want " << want[worst] << " (rtol " << rtol
            << ", atol " << atol << ")");
  CHECK(worst_excess <= 0);
}

}  // namespace moe::test
