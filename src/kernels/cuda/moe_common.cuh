// Device helpers shared by the MoE kernels (router.cu, router_aux.cu,
// moe_dispatch.cu): activation loads/stores in fp32, warp and block
// reductions in a fixed order (so results do not depend on scheduling), and
// the host-side dtype dispatch. nvcc only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "src/core/tensor.h"
#include "src/kernels/cuda/cuda_check.h"

namespace moe::cuda::moe_detail {

constexpr unsigned kFullMask = 0xffffffffu;
// Limits of the MoE kernels: a lane keeps a 64-bit mask of the experts it owns
// (E <= 64 * 32), one lane holds one top-k slot (K <= 32), and the dispatch
// kernels keep E counters per warp in shared memory (4 warps * 2048 * 4 B).
constexpr int64_t kMaxExperts = 2048;
constexpr int64_t kMaxTopK = 32;

// ---- activations: BF16 or F32 in memory, fp32 in registers -----------------
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<float>) or f(TypeTag<__nv_bfloat16>) for an activation dtype.
template <typename F>
void with_activation_type(const Tensor& t, const char* op, const char* name, F&& f) {
  if (t.dtype == DType::kF32) {
    f(TypeTag<float>{});
  } else if (t.dtype == DType::kBF16) {
    f(TypeTag<__nv_bfloat16>{});
  } else {
    throw std::logic_error(std::string(op) + ": " + name + " must be f32 or bf16, is " + dtype_name(t.dtype));
  }
}

inline void expect_dtype(const Tensor& t, DType want, const char* op, const char* name) {
  if (t.dtype != want) {
    throw std::logic_error(std::string(op) + ": " + name + " must be " + dtype_name(want) + ", is " +
                           dtype_name(t.dtype) + " " + t.shape_string());
  }
}

inline void expect(bool ok, const char* op, const std::string& what) {
  if (!ok) throw std::logic_error(std::string(op) + ": " + what);
}

inline void check_launch(const char* op, const std::string& shapes) {
  check(cudaGetLastError(), std::string(op) + " " + shapes);
}

inline int64_t rows_of(const Tensor& t) { return t.ndim == 0 || t.size(-1) == 0 ? 0 : t.numel() / t.size(-1); }

inline unsigned ceil_div(int64_t a, int64_t b) { return static_cast<unsigned>((a + b - 1) / b); }

// ---- reductions (butterfly: every lane ends with the same value) -----------
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__device__ __forceinline__ double warp_max(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmax(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread
// gets the result. `scratch` holds 32 values. Contains __syncthreads: call it
// from every thread of the block.
template <typename T>
__device__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const T total = warp_sum(lane < warps ? scratch[lane] : T(0));
    if (lane == 0) scratch[0] = total;
  }
  __syncthreads();
  return scratch[0];
}

}  // namespace moe::cuda::moe_detail
