// Expert GEMMs through CUTLASS's grouped GEMM: CUTLASS 3's on Hopper (sm_90a:
// TMA loads, wgmma tensor cores, a warp-specialised persistent kernel) and
// CUTLASS 2's on Ampere and Ada (sm_80: cp.async pipelines, mma.sync), each
// run on the GPU generation it is built for, with the semantics of
// cuda_ops.h's grouped_matmul_forward/backward for BF16 inputs:
//   forward   out[rows of e]  = x[rows of e] W[e]           (bf16, written)
//   backward  dx[rows of e]  += dout[rows of e] W[e]^T      (bf16; skipped when dx is empty)
//             dW[e]          += x[rows of e]^T dout[rows of e]  (fp32; K is the expert's row count)
// The per-expert row counts stay on the device: a small kernel turns the
// offsets into each group's problem shape and pointers, then one CUTLASS
// launch runs every expert. No host sync, so a step can be a CUDA graph.
// Each product's kernel arguments are built once per shape (the first call,
// before any graph is captured) and cached; only the device arrays they point
// to change between calls.
//
// Built only where a real toolkit is; elsewhere (CPU-only, the emulator)
// cutlass_grouped_gemm_absent.cc says so through in_build().
#pragma once

#include <cstdint>

#include "src/core/tensor.h"

namespace moe::cuda::cutlass_grouped {

// Whether this build has the CUTLASS kernels (for sm_80 and sm_90a).
bool in_build();

// Builds (once per device and weight shape [E, I, O]) the kernel arguments of
// the three products on the current device, for its GPU generation. Call it
// outside CUDA graph capture; throws std::runtime_error when CUTLASS cannot
// run the shape or has no kernel for the GPU (sm_8x and sm_90 only).
void prepare(int64_t E, int64_t I, int64_t O);

void forward(const Tensor& out_MO, const Tensor& x_MI, const Tensor& w_EIO, const Tensor& offsets_E1);
void backward(const Tensor& dx_MI, const Tensor& dw_EIO, const Tensor& dout_MO, const Tensor& x_MI, const Tensor& w_EIO,
              const Tensor& offsets_E1);

}  // namespace moe::cuda::cutlass_grouped
