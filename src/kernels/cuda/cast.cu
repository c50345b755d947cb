#include <cuda_bf16.h>

#include <string>

#include "src/kernels/cuda/cast.h"
#include "src/kernels/cuda/cuda_check.h"
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

}  // namespace moe::cuda
