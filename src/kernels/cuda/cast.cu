#include <cuda_bf16.h>

#include <stdexcept>
#include <string>

#include "src/core/tensor.h"

#include "src/kernels/cuda/cast.h"
#include "src/kernels/cuda/cuda_check.h"
#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/stream.h"

namespace moe::cuda {
namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

__global__ void f32_to_bf16_kernel(__nv_bfloat16* out, const float* in, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(in[i]);
}

__global__ void bf16_to_f32_kernel(float* out, const __nv_bfloat16* in, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __bfloat162float(in[i]);
}

}  // namespace

void f32_to_bf16(uint16_t* out, const float* in, int64_t n) {
  if (n == 0) return;
  f32_to_bf16_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(reinterpret_cast<__nv_bfloat16*>(out), in, n);
  check(cudaGetLastError(), "f32_to_bf16 (n = " + std::to_string(n) + ")");
}

void bf16_to_f32(float* out, const uint16_t* in, int64_t n) {
  if (n == 0) return;
  bf16_to_f32_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(out, reinterpret_cast<const __nv_bfloat16*>(in), n);
  check(cudaGetLastError(), "bf16_to_f32 (n = " + std::to_string(n) + ")");
}

void cast(const Tensor& dst, const Tensor& src) {
  const std::string shapes = std::string("dst ") + dtype_name(dst.dtype) + dst.shape_string() + ", src " +
                             dtype_name(src.dtype) + src.shape_string();
  if (dst.numel() != src.numel()) throw std::logic_error("cuda::cast: " + shapes);
  if (dst.dtype == src.dtype) {
    check(cudaMemcpyAsync(dst.data, src.data, static_cast<size_t>(src.bytes()), cudaMemcpyDeviceToDevice, stream()),
          "cuda::cast " + shapes);
  } else if (dst.dtype == DType::kBF16 && src.dtype == DType::kF32) {
    f32_to_bf16(static_cast<uint16_t*>(dst.data), src.f32(), src.numel());
  } else if (dst.dtype == DType::kF32 && src.dtype == DType::kBF16) {
    bf16_to_f32(dst.f32(), static_cast<const uint16_t*>(src.data), src.numel());
  } else {
    throw std::logic_error("cuda::cast: no conversion for " + shapes);
  }
}

}  // namespace moe::cuda
