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
#include "src/kernels/cuda/device_math.cuh"

namespace moe::cuda::moe_detail {

constexpr unsigned kFullMask = 0xffffffffu;
// Limits of the MoE kernels: a lane keeps a 64-bit mask of the experts it owns
// (E <= 64 * 32), one lane holds one top-k slot (K <= 32), and the dispatch
// kernels keep E counters per warp in shared memory (4 warps * 2048 * 4 B).
constexpr int64_t kMaxExperts = 2048;
constexpr int64_t kMaxTopK = 32;  // config/derived.h kMaxExpertsPerToken: validation holds configs to it

// ---- activations: BF16 or F32 in memory, fp32 in registers (device_math.cuh) ----
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

}  // namespace moe::cuda::moe_detail
