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

// ---- causal attention with grouped KV heads (attention.cu) ------------------
// q, out, dq, dout: [B, T, H, Dh]; k, v, dk, dv: [B, T, G, Dh], all F32 or all
// BF16; lse_BHT: [B, H, T] F32. Semantics of cpu::attention_forward/backward:
// out and lse WRITTEN; dq, dk, dv ACCUMULATED (+=). Fused (no T x T matrix),
// fp32 softmax and accumulation; BF16 GEMMs on tensor cores. Dh up to 128.
// The backward is deterministic (no atomics) and keeps one grow-only scratch
// buffer of B*H*T floats, allocated when B*H*T grows (that call syncs the stream).
void attention_forward(const Tensor& out, const Tensor& lse_BHT, const Tensor& q, const Tensor& k, const Tensor& v);
void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout, const Tensor& q,
                        const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse_BHT);

}  // namespace moe::cuda
