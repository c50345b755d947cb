// The CUDA backend: the ops of src/kernels/ops.h for device tensors, with the
// same names and arguments. ops.cc dispatches here when the tensors live on
// the GPU. Conventions, for every kernel:
// - Tensors are device memory (Tensor::device == Device::kCuda). Activations
//   and their gradients may be BF16 or F32; every reduction and GEMM
//   accumulates in fp32. Router logits, scores and weights are F32 (router
//   math is fp32 whatever the training precision). Master weights, their
//   gradients and AdamW moments are F32. Token ids and routing indices are I32.
// - Kernels run on stream() (stream.h) and do not synchronise; a function that
//   must read a device value on the host says so in its comment.
// - Errors (launch failures, unsupported dtypes or shapes) throw, naming the
//   op and the shapes (cuda_check.h).
// Available when MOE_TRAIN_HAS_CUDA is 1.
#pragma once

#include "src/core/tensor.h"

namespace moe::cuda {

// Each op family adds its declarations below, next to its .cu file's name.

// ---- GEMMs: matmul.cu (cuBLASLt), grouped_matmul.cu (own kernels) ----------
// Semantics as in ops.h. Inputs (x, w, dout) share one dtype, BF16 or F32;
// outputs out and dx are F32, or BF16 when the inputs are BF16; dw is always
// F32. Products accumulate in fp32. Backward ACCUMULATES (+=) into dx and dw;
// dx may be an empty Tensor (no input gradient) in both ops.
//
// matmul: out_NO = x_NI w_OI^T through cuBLASLt, one plan (descriptors and
// heuristic) per distinct shape, cached for the process.
void matmul_forward(const Tensor& out_NO, const Tensor& x_NI, const Tensor& w_OI);
void matmul_backward(const Tensor& dx_NI, const Tensor& dw_OI, const Tensor& dout_NO, const Tensor& x_NI,
                     const Tensor& w_OI);

// grouped_matmul: rows [offsets[e], offsets[e+1]) of x times w_EIO[e] ([I, O]
// row-major), for every expert in ONE kernel launch per product. offsets_E1
// is an I32 DEVICE tensor that the host never reads (no sync: a step can be a
// CUDA graph); offsets are clamped to [0, x.size(0)], so x.size(0) is the row
// capacity. Rows outside [offsets[0], offsets[E]) are not touched; an expert
// with no rows leaves its dw as it was.
void grouped_matmul_forward(const Tensor& out_MO, const Tensor& x_MI, const Tensor& w_EIO, const Tensor& offsets_E1);
void grouped_matmul_backward(const Tensor& dx_MI, const Tensor& dw_EIO, const Tensor& dout_MO, const Tensor& x_MI,
                             const Tensor& w_EIO, const Tensor& offsets_E1);

}  // namespace moe::cuda
