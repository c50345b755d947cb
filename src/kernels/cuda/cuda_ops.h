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

#include <cstdint>

#include "src/core/tensor.h"

namespace moe::cuda {

// Each op family adds its declarations below, next to its .cu file's name.

// ---- dense ops: embedding, RMSNorm, RoPE, SwiGLU, elementwise, AdamW, cross-entropy ----
// Same semantics as the CPU reference (cpu/cpu_ops.h): backward ops ACCUMULATE
// (+=) into gradient outputs unless noted. "act" = F32 or BF16, each tensor on
// its own (e.g. an F32 residual stream feeding a BF16 normed output). Other
// dtype combinations throw std::logic_error naming the op and the dtypes.

// embedding.cu. out_ND act, table_VD act, dtable_VD F32, dout_ND act, tokens_N
// I32. An id outside [0, V) gives a NaN output row and no gradient. Backward is
// deterministic (no atomics): one writer per table row, adds in token order
// (O(N^2) token-id compares, read through L1/L2, besides the row traffic).
void embedding_forward(const Tensor& out_ND, const Tensor& tokens_N, const Tensor& table_VD);
void embedding_backward(const Tensor& dtable_VD, const Tensor& dout_ND, const Tensor& tokens_N);

// rmsnorm.cu. x, out, dx, dout act; w_D act; rstd_N F32; dw_D F32 (+=, summed
// over rows deterministically: per-chunk partial sums, then a fixed-order
// reduction; the partials live in a grow-only device scratch buffer allocated
// on first use, at most 64 * D floats).
void rmsnorm_forward(const Tensor& out_ND, const Tensor& rstd_N, const Tensor& x_ND, const Tensor& w_D, float eps);
void rmsnorm_backward(const Tensor& dx_ND, const Tensor& dw_D, const Tensor& dout_ND, const Tensor& x_ND,
                      const Tensor& w_D, const Tensor& rstd_N);

// rope.cu. x [B, T, heads, Dh] act, in place; Dh even and at most 1024.
// Backward OVERWRITES (rotates the gradient back), as on the CPU.
void rope_forward(const Tensor& x_BTHDh, float theta);
void rope_backward(const Tensor& dx_BTHDh, float theta);

// swiglu.cu. out = silu(a) * b. a and b one act dtype, da and db one act dtype,
// out and dout act.
void swiglu_forward(const Tensor& out, const Tensor& a, const Tensor& b);
void swiglu_backward(const Tensor& da, const Tensor& db, const Tensor& dout, const Tensor& a, const Tensor& b);

// elementwise.cu. y, x act.
void add_inplace(const Tensor& y, const Tensor& x);  // y += x
void scale_inplace(const Tensor& x, float factor);
// Sum of squares of x (act) accumulated in double, deterministic (fixed
// partition and reduction order). HOST SYNC: it copies the result to the
// host and waits for stream() (cudaStreamSynchronize) before returning.
double sum_squares(const Tensor& x);

// adamw.cu. param, grad, m, v F32 (master weights and moments), the CPU's math
// (cpu::adamw_step) with the same rounding steps.
void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, float lr, float beta1,
                float beta2, float eps, float weight_decay, int64_t step, float grad_scale);

// cross_entropy.cu. logits_nV act; dlogits_nV same dtype as logits (may alias
// it: in place); loss_n F32 (WRITTEN); targets_n I32. dlogits = (softmax -
// onehot) * grad_scale WRITTEN. A target outside [0, V) gives loss NaN.
void cross_entropy_forward_backward(const Tensor& loss_n, const Tensor& dlogits_nV, const Tensor& logits_nV,
                                    const Tensor& targets_n, float grad_scale);

}  // namespace moe::cuda
