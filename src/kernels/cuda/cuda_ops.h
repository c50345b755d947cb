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
#include <vector>

#include "src/core/tensor.h"
#include "src/kernels/adamw_slot.h"   // ops::AdamWSlot (the fused AdamW's argument, shared with ops.h)
#include "src/kernels/cpu/cpu_ops.h"  // RouterKind, RouterAux (plain types shared by both backends)

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
// reduction; the partials live in a device scratch buffer of at most 64 * D
// floats, sized by reserve_rmsnorm_backward, device_scratch.h).
// add_rmsnorm_forward: x, y and sum one act dtype. rmsnorm_backward WRITES dx
// = dresidual (dx's dtype; may be dx, or empty) + the norm's input gradient.
void rmsnorm_forward(const Tensor& out_ND, const Tensor& rstd_N, const Tensor& x_ND, const Tensor& w_D, float eps);
void add_rmsnorm_forward(const Tensor& sum_ND, const Tensor& out_ND, const Tensor& rstd_N, const Tensor& x_ND,
                         const Tensor& y_ND, const Tensor& w_D, float eps);
void rmsnorm_backward(const Tensor& dx_ND, const Tensor& dw_D, const Tensor& dout_ND, const Tensor& x_ND,
                      const Tensor& w_D, const Tensor& rstd_N, const Tensor& dresidual_ND);
void reserve_rmsnorm_backward(int64_t N, int64_t D);

// rope.cu. x [B, T, heads, Dh] act, in place; Dh even and at most 1024.
// Backward OVERWRITES (rotates the gradient back), as on the CPU.
void rope_forward(const Tensor& x_BTHDh, float theta, int64_t first_position);
void rope_backward(const Tensor& dx_BTHDh, float theta);

// swiglu.cu. out = silu(a) * b; the backward WRITES da and db. a and b one act dtype, da and db one act dtype,
// out and dout act.
void swiglu_forward(const Tensor& out, const Tensor& a, const Tensor& b);
void swiglu_backward(const Tensor& da, const Tensor& db, const Tensor& dout, const Tensor& a, const Tensor& b);

// cast.cu. dst = src converted: f32 -> bf16
// (round to nearest even), bf16 -> f32, or a copy for equal dtypes.
void cast(const Tensor& dst, const Tensor& src);

// elementwise.cu. out, a, b act (out may be a or b).
void add(const Tensor& out, const Tensor& a, const Tensor& b);
void scale_inplace(const Tensor& x, float factor);
void multiply_noise(const Tensor& out, const Tensor& x, const Tensor& key_4, uint64_t stream,
                    const noise::Distribution& d);
void multiply_noise_rows(const Tensor& out_RC, const Tensor& x_RC, const Tensor& row_id_R2,
                         int64_t rows_per_micro_batch, const Tensor& key_4, uint64_t stream,
                         const noise::Distribution& d);
void noise_row_ids(const Tensor& ids_R2, const Tensor& rows_R, const Tensor& key_4);
// Sum of squares of x (act) accumulated in double, deterministic (fixed
// partition and reduction order). HOST SYNC: it copies the result to the
// host and waits for stream() (cudaStreamSynchronize) before returning.
double sum_squares(const Tensor& x);

// fp8_matmul.cu. matmul with FP8 numerics (ops.h): x, w act, one dtype; out,
// dout and dx act; dw F32 (+=). N, I and O multiples of 16. Needs a GPU of
// compute capability 8.9 or newer (cuBLASLt's FP8 GEMMs). Its codes and
// scales live in a device scratch buffer sized by reserve_fp8_matmul.
void fp8_matmul_forward(const Tensor& out_NO, const Tensor& x_NI, const Tensor& w_OI);
void fp8_matmul_backward(const Tensor& dx_NI, const Tensor& dw_OI, const Tensor& dout_NO, const Tensor& x_NI,
                         const Tensor& w_OI, bool accumulate_dx);
void reserve_fp8_matmul(int64_t N, int64_t I, int64_t O);
// The bytes of that buffer for an N x I -> O product: a header (the amax
// slots and scales), then the backward's four code arrays (dout and its
// transpose, W's and x's transposes; the forward's two fit in them), each
// starting on a kFp8ScratchAlign boundary.
constexpr int64_t kFp8ScratchAlign = 256;  // also the header's size
inline int64_t fp8_scratch_round_up(int64_t bytes) {
  return (bytes + kFp8ScratchAlign - 1) / kFp8ScratchAlign * kFp8ScratchAlign;
}
inline int64_t fp8_matmul_scratch_bytes(int64_t N, int64_t I, int64_t O) {
  return kFp8ScratchAlign + 2 * fp8_scratch_round_up(N * O) + fp8_scratch_round_up(O * I) + fp8_scratch_round_up(N * I);
}

// adamw.cu. param, grad, m, v F32 (master weights and moments), the CPU's math
// (cpu::adamw_step) with the same rounding steps.
void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, float lr, float beta1,
                float beta2, float eps, float weight_decay, int64_t step, float grad_scale);

// ---- fused multi-tensor optimizer ops (multi_tensor.cuh) ----
// Many tensors in ONE launch: each non-empty tensor is cut into fixed chunks
// and a small device table of (pointers, numel, first chunk) tells each block
// where its chunks are (as apex's multi_tensor_apply / PyTorch's _foreach).
// The table lives in a grow-only device buffer of the op, uploaded through a
// pinned staging buffer only when the list differs from the previous call's
// (pointers, sizes, weight decays). An unchanged list, the steady state (the
// optimizer passes the same lists every step), costs no upload, no sync and
// no allocation, so the step can be graph-captured. A changed list costs one
// small async copy, and the host waits for the previous copy out of the
// staging buffer if it is still running (cudaEventSynchronize); a longer list
// than ever before first grows both buffers, after a cudaStreamSynchronize
// (kernels may still read the old table). All tensors F32; empty tensors are
// skipped. One host thread drives the backend (as stream() assumes).
//
// elementwise.cu. The sum over xs of sum_squares(x) in double, deterministic:
// the partition (chunks, at most 1024 blocks taking chunks in a fixed stride)
// and the reduction order depend only on the sizes in the list. Not bitwise
// equal to the CPU's sequential sum (another order): within 1e-9 relative.
// HOST SYNC: ONE per call (the result is copied to the host, then
// cudaStreamSynchronize), none when every tensor is empty.
double sum_squares_many(const std::vector<Tensor>& xs);
// adamw.cu. adamw_step on every slot with that slot's weight decay, the same
// per-element operations and rounding as adamw_step. The decay factor
// 1 - lr*wd is formed per tensor on the device (lr changes every step, the
// table does not), with the same two roundings the host's float expression
// has. No host sync in a steady-state step.
void adamw_step_many(const std::vector<ops::AdamWSlot>& slots, float lr, float beta1, float beta2, float eps,
                     int64_t step, float grad_scale);

// cross_entropy.cu. logits_nV act; dlogits_nV same dtype as logits (may alias
// it: in place); loss_n F32 (WRITTEN); targets_n I32. dlogits = (softmax -
// onehot) * grad_scale WRITTEN. A target outside [0, V) gives loss NaN.
void cross_entropy_forward_backward(const Tensor& loss_n, const Tensor& dlogits_nV, const Tensor& logits_nV,
                                    const Tensor& targets_n, float grad_scale);

// ---- MoE: router (router.cu), aux losses (router_aux.cu), dispatch (moe_dispatch.cu) ----
// Semantics, layouts and write/accumulate contracts are those of
// src/kernels/cpu/cpu_ops.h; what differs is said here. Router tensors are F32
// (indices, offsets and row maps I32); activations (x, xs, ys, out, and their
// gradients) may each be F32 or BF16, and are summed in fp32.
// Limits (checked, they throw): E <= 2048 experts, K <= 32 and K <= E, N*K < 2^31.
// Routing indices outside [0, E) (only possible from a bug upstream) are
// skipped: never counted, never routed; the CPU reference would read out of bounds.
using cpu::RouterAux;
using cpu::RouterKind;

// Scores and weights are computed in double and rounded to float as on the
// CPU; ties go to the lower expert index.
void router_forward(const Tensor& topk_idx_NK, const Tensor& topk_w_NK, const Tensor& scores_NE,
                    const Tensor& logits_NE, const Tensor& bias_E, RouterKind kind);
void router_backward(const Tensor& dlogits_NE, const Tensor& dtopk_w_NK, const Tensor& topk_idx_NK,
                     const Tensor& topk_w_NK, const Tensor& scores_NE, RouterKind kind);
void router_noise_forward(const Tensor& logits_NE, const Tensor& noise_logits_NE, const Tensor& key_4,
                          uint64_t noise_stream);
void router_noise_backward(const Tensor& dnoise_logits_NE, const Tensor& dlogits_NE, const Tensor& noise_logits_NE,
                           const Tensor& key_4, uint64_t noise_stream);
// No host sync: the three losses (reduced in double, rounded to float once,
// as on the CPU) are WRITTEN to aux_3 (F32 [3], device), like daux_logits_NE
// (WRITTEN, may be empty). Scratch: a device workspace owned by this function
// (~(E + B*E) ints and (B*C*E + B*C) doubles, C <= 256 chunks per sequence),
// sized by reserve_router_aux_losses (device_scratch.h).
void router_aux_losses(const Tensor& aux_3, const Tensor& daux_logits_NE, const Tensor& logits_NE,
                       const Tensor& scores_NE, const Tensor& topk_idx_NK, int64_t T, RouterKind kind, float w_lb,
                       float w_z, float w_seq, float grad_scale);
void reserve_router_aux_losses(int64_t N, int64_t T, int64_t E);
// No host sync: M = offsets_E1[E] stays on the device. Output identical to
// the CPU's (integers). row_pair_M entries from M on are left unspecified
// (they hold scratch), where the CPU leaves them untouched; only the first M
// are part of the plan.
void moe_plan(const Tensor& offsets_E1, const Tensor& row_pair_M, const Tensor& pair_row_NK, const Tensor& topk_idx_NK,
              int64_t capacity, const Tensor& priority_NK);
// moe_counts.cu. routed_E[e] += the pairs of topk_idx_NK that chose e (before
// capacity); kept_E[e] += offsets_E1[e+1] - offsets_E1[e]. All I32. No sync:
// the counts of a step stay on the device until the trainer reads them.
void moe_count_experts(const Tensor& routed_E, const Tensor& kept_E, const Tensor& topk_idx_NK,
                       const Tensor& offsets_E1);
// xs[pair_row[n,k]] = x[n] for each kept pair, one block per token; rows of
// xs outside [0, xs_MD.size(0)) skipped, other rows untouched. K =
// pair_row_NK.numel() / N.
void moe_permute(const Tensor& xs_MD, const Tensor& x_ND, const Tensor& pair_row_NK);
// dx[n] += sum of dxs over the kept rows of token n, gathered per token through
// pair_row_NK (no atomics; deterministic), added in ascending row order as
// the CPU does.
void moe_permute_backward(const Tensor& dx_ND, const Tensor& dxs_MD, const Tensor& pair_row_NK);
// dst[i] = src[index[i]] for i < index.numel(): one block per row, 16-byte
// copies where rows allow. An index outside src's rows (a bug upstream)
// leaves the row untouched.
void gather_rows(const Tensor& dst_RD, const Tensor& src_RD, const Tensor& index_R);
// out[n] += sum_k w[n,k] * ys[pair_row[n,k]]   (dropped pairs add nothing)
void moe_unpermute(const Tensor& out_ND, const Tensor& ys_MD, const Tensor& topk_w_NK, const Tensor& pair_row_NK);
// dys[pair_row[n,k]] = w[n,k] * dout[n] (WRITTEN); dtopk_w[n,k] = dot(dout[n],
// ys[pair_row[n,k]]) summed in fp32 (WRITTEN; 0 when dropped).
void moe_unpermute_backward(const Tensor& dys_MD, const Tensor& dtopk_w_NK, const Tensor& dout_ND, const Tensor& ys_MD,
                            const Tensor& topk_w_NK, const Tensor& pair_row_NK);

// ---- causal attention with grouped KV heads (attention.cu) ------------------
// q, out, dq, dout: [B, T, H, Dh]; k, v, dk, dv: [B, T, G, Dh], all F32 or all
// BF16; lse_BHT: [B, H, T] F32. Semantics of cpu::attention_forward/backward:
// out and lse WRITTEN; dq, dk, dv WRITTEN too (the CPU reference accumulates;
// ops.h zeroes for it). Fused (no T x T matrix), fp32 softmax and
// accumulation; BF16 GEMMs on tensor cores. Dh up to 128. The project's own
// kernels: cuDNN's fused attention (cudnn_attention.h) runs instead where
// src/kernels/kernel_choice.h says so. The backward is deterministic (no
// atomics) and keeps one scratch buffer of B*H*T floats, sized by
// reserve_attention (device_scratch.h).
void attention_forward(const Tensor& out, const Tensor& lse_BHT, const Tensor& q, const Tensor& k, const Tensor& v);
void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout, const Tensor& q,
                        const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse_BHT);
void reserve_attention(int64_t B, int64_t T, int64_t H);

// attention_decode.cu. One query row per head against the first `length` rows
// of a KV cache (generation): q, out [H, Dh]; k_cache, v_cache [T_max, G, Dh];
// F32 or BF16, all alike; length at most 8192 (the scores stay in shared memory).
void attention_decode(const Tensor& out_HDh, const Tensor& q_HDh, const Tensor& k_cache_TGDh,
                      const Tensor& v_cache_TGDh, int64_t length);

// ---- GEMMs: matmul.cu (cuBLASLt), grouped_matmul.cu (own kernels) ----------
// Semantics as in ops.h. Inputs (x, w, dout) share one dtype, BF16 or F32;
// outputs out and dx are F32, or BF16 when the inputs are BF16; dw is always
// F32. Products accumulate in fp32. Backward ACCUMULATES (+=) into dx and dw
// (matmul_backward's dx: unless accumulate_dx is false, then it is written);
// dx may be an empty Tensor (no input gradient) in both ops.
//
// matmul: out_NO = x_NI w_OI^T through cuBLASLt, one plan (descriptors and
// heuristic) per distinct shape, cached for the process.
void matmul_forward(const Tensor& out_NO, const Tensor& x_NI, const Tensor& w_OI);
void matmul_backward(const Tensor& dx_NI, const Tensor& dw_OI, const Tensor& dout_NO, const Tensor& x_NI,
                     const Tensor& w_OI, bool accumulate_dx);

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
