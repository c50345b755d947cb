// Device-side basics every kernel family shares: values are stored as BF16 or
// F32 and computed in fp32, and warp/block reductions in a fixed order (so a
// fixed launch shape gives the same bits every run). Included by .cu files
// only (nvcc); not part of any C++ header.
#pragma once

#include <cuda_bf16.h>

#include <type_traits>

namespace moe::cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }

// Rounds to nearest-even for bf16 (as the host's f32_to_bf16 in src/core/bf16.h).
template <typename T>
__device__ __forceinline__ T from_f32(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    return __float2bfloat16_rn(x);
  }
}

// Butterfly reductions: every lane ends with the same value.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

__device__ __forceinline__ double warp_max(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread
// gets the result. `shared` holds 32 values and may be reused right after the
// call. Contains __syncthreads: call it from every thread of the block.
template <typename T>
__device__ T block_sum(T v, T* shared) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int warps = static_cast<int>(blockDim.x >> 5);
    T w = lane < warps ? shared[lane] : T(0);
    w = warp_sum(w);
    if (lane == 0) shared[0] = w;
  }
  __syncthreads();
  const T total = shared[0];
  __syncthreads();
  return total;
}

// Max over the block, as block_sum.
__device__ inline float block_max(float v, float* shared) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  v = warp_max(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int warps = static_cast<int>(blockDim.x >> 5);
    float w = lane < warps ? shared[lane] : -INFINITY;
    w = warp_max(w);
    if (lane == 0) shared[0] = w;
  }
  __syncthreads();
  const float total = shared[0];
  __syncthreads();
  return total;
}

}  // namespace moe::cuda
