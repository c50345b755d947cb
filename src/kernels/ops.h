// Every numeric op of the model behind one device-neutral signature. Ops take
// Tensors, which carry their device; each op runs the CPU reference
// (cpu/cpu_ops.h) for host tensors and the CUDA kernel for device tensors.
// The model calls only this header, so a new backend never touches the model.
//
// Shape legend as in cpu/cpu_ops.h: N tokens (= B*T), D dim, H query heads,
// G kv heads, Dh head dim, V vocab, E experts, K top-k, M routed rows.
// Backward ops ACCUMULATE (+=) into gradient outputs unless noted: several
// branches of the model sum into one gradient. The first branch can write its
// part instead (GradInto::kWrite), which saves zeroing the buffer first.
#pragma once

#include <cstdint>
#include <vector>

#include "src/core/tensor.h"
#include "src/kernels/adamw_slot.h"
#include "src/kernels/cpu/cpu_ops.h"

namespace moe::ops {

using cpu::RouterKind;

void embedding_forward(const Tensor& out_ND, const Tensor& tokens_N, const Tensor& table_VD);
void embedding_backward(const Tensor& dtable_VD, const Tensor& dout_ND, const Tensor& tokens_N);

// out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps) per row.
void rmsnorm_forward(const Tensor& out_ND, const Tensor& rstd_N, const Tensor& x_ND, const Tensor& w_D, float eps);
// A residual add and the norm after it, in one pass over the rows (a
// pre-norm block's "h = x + attn(...); norm(h)"): sum = x + y, rounded to
// sum's dtype, then out and rstd of rmsnorm_forward(sum). x, y and sum share
// one dtype; sum may be x or y.
void add_rmsnorm_forward(const Tensor& sum_ND, const Tensor& out_ND, const Tensor& rstd_N, const Tensor& x_ND,
                         const Tensor& y_ND, const Tensor& w_D, float eps);
// dx is WRITTEN: dx = dresidual + (the norm's input gradient), where
// dresidual is the gradient that reaches x around the norm (a residual
// branch), in dx's dtype. dresidual may be dx itself (accumulate) or empty
// (no residual). dw accumulates.
void rmsnorm_backward(const Tensor& dx_ND, const Tensor& dw_D, const Tensor& dout_ND, const Tensor& x_ND,
                      const Tensor& w_D, const Tensor& rstd_N, const Tensor& dresidual_ND);

enum class GradInto { kAdd, kWrite };

// out = x W^T, W [O, I]. dx may be an empty Tensor (no input gradient); it is
// added to or written (dx_into); dw accumulates.
void matmul_forward(const Tensor& out_NO, const Tensor& x_NI, const Tensor& w_OI);
void matmul_backward(const Tensor& dx_NI, const Tensor& dw_OI, const Tensor& dout_NO, const Tensor& x_NI,
                     const Tensor& w_OI, GradInto dx_into = GradInto::kAdd);

// matmul with FP8 numerics (train.mixed_precision = "fp8"): x and W in E4M3,
// the output gradient in E5M2, each with the power-of-two scale of its own
// amax (current per-tensor scaling, src/core/fp8.h); products summed in fp32.
//   out = Q4(x) Q4(W)^T;  dx (+)= Q5(dout) Q4(W);  dW += Q5(dout)^T Q4(x)
// On the CPU, quantise-dequantise and the fp32 GEMMs; on a GPU (compute
// capability 8.9 or newer), cuBLASLt's FP8 GEMMs on the codes. N, I and O
// must be multiples of 16 on a GPU. reserve_fp8_matmul sizes the GPU's codes
// for the largest call (before any CUDA graph is captured).
void fp8_matmul_forward(const Tensor& out_NO, const Tensor& x_NI, const Tensor& w_OI);
void fp8_matmul_backward(const Tensor& dx_NI, const Tensor& dw_OI, const Tensor& dout_NO, const Tensor& x_NI,
                         const Tensor& w_OI, GradInto dx_into = GradInto::kAdd);
void reserve_fp8_matmul(Device device, int64_t N, int64_t I, int64_t O);
// The device bytes reserve_fp8_matmul holds for that product on a GPU (for --dry-run).
int64_t fp8_matmul_gpu_bytes(int64_t N, int64_t I, int64_t O);

// x: [B, T, heads, Dh], rotated in place; row t of a sequence sits at
// position first_position + t (generation rotates one new row at its place).
void rope_forward(const Tensor& x_BTHDh, float theta, int64_t first_position = 0);
void rope_backward(const Tensor& dx_BTHDh, float theta);

// q, out: [B, T, H, Dh]; k, v: [B, T, G, Dh]; lse: [B, H, T]. The backward
// WRITES dq, dk and dv. On a GPU, cuDNN's fused attention or the builtin
// kernel runs, as kernels/gpu_kernels.h decides per shape.
void attention_forward(const Tensor& out, const Tensor& lse_BHT, const Tensor& q, const Tensor& k, const Tensor& v);
void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout, const Tensor& q,
                        const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse_BHT);

// One query row against a KV cache (generation): q, out [H, Dh]; k_cache,
// v_cache [T_max, G, Dh], of which the first `length` rows are read. The
// causal attention of the last of `length` tokens: the same scale and
// softmax as attention_forward.
void attention_decode(const Tensor& out_HDh, const Tensor& q_HDh, const Tensor& k_cache_TGDh,
                      const Tensor& v_cache_TGDh, int64_t length);

// out = silu(a) * b. The backward WRITES da and db.
void swiglu_forward(const Tensor& out, const Tensor& a, const Tensor& b);
void swiglu_backward(const Tensor& da, const Tensor& db, const Tensor& dout, const Tensor& a, const Tensor& b);

// loss_n WRITTEN per row; dlogits WRITTEN (may alias logits).
void cross_entropy_forward_backward(const Tensor& loss_n, const Tensor& dlogits_nV, const Tensor& logits_nV,
                                    const Tensor& targets_n, float grad_scale);

struct AdamW {
  float lr, beta1, beta2, eps, weight_decay;
};
void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamW& hyper,
                int64_t step, float grad_scale);
double sum_squares(const Tensor& x);
// dst = src converted: f32 -> bf16 (round to nearest even), bf16 -> f32, or a
// copy for equal dtypes. Same numel. Keeps bf16 compute copies of fp32 masters.
void cast(const Tensor& dst, const Tensor& src);
// out = a + b, elementwise, rounded to out's dtype; out may be a or b.
void add(const Tensor& out, const Tensor& a, const Tensor& b);
void scale_inplace(const Tensor& x, float factor);
// out = x * noise i of `stream` (counter_noise.h), elementwise, for the draw
// keyed by key_4 (I32 [4]: seed, step, global micro-batch, on x's device);
// element i of the micro-batch is noise i + micro-batch x numel. out may be x.
// Its own backward: dx = dout times the same noise, the same call on dout.
void multiply_noise(const Tensor& out, const Tensor& x, const Tensor& key_4, uint64_t stream,
                    const noise::Distribution& d);
// The same for rows that are a permutation of micro-batches' rows (the
// experts' rows, sorted by expert, and under expert parallelism gathered from
// other ranks' micro-batches): row r of x [R, C] draws as row row_id_R2[r][1]
// of global micro-batch row_id_R2[r][0] (I32 [R, 2]), in micro-batches of
// rows_per_micro_batch rows, so its noise follows its token, not its
// position or its rank; the key's seed and step are read, not its micro-batch.
// out may be x.
void multiply_noise_rows(const Tensor& out_RC, const Tensor& x_RC, const Tensor& row_id_R2,
                         int64_t rows_per_micro_batch, const Tensor& key_4, uint64_t stream,
                         const noise::Distribution& d);
// ids_R2 (I32 [R, 2]) = (the key's global micro-batch, rows_R[r]) for each
// row: the ids multiply_noise_rows reads, for rows of this rank's micro-batch.
void noise_row_ids(const Tensor& ids_R2, const Tensor& rows_R, const Tensor& key_4);

// ---- fused multi-tensor optimizer ops: every parameter in one call ----------
// Host tensors run the per-tensor CPU reference in list order, so the numbers
// are those of the loop over the single-tensor op, bit for bit. Device tensors
// run one launch over all of them (a chunked multi-tensor kernel, cuda_ops.h).
// Every tensor is F32; empty ones (numel 0) are allowed and change nothing.
//
// The sum over xs of sum_squares(x), in double: on the host exactly
// ((0 + sum_squares(xs[0])) + sum_squares(xs[1])) + ...; on the device one
// deterministic reduction and ONE host sync for the whole list.
double sum_squares_many(const std::vector<Tensor>& xs);
// What every slot of one fused AdamW step shares (weight decay is per slot).
struct AdamWShared {
  float lr, beta1, beta2, eps;
};
// adamw_step on every slot, each with its own weight decay. On the device: no
// host sync and no allocation once the list has been seen (cuda_ops.h).
// Each slot's optional bf16 `compute` copy is written from the updated param.
void adamw_step_many(const std::vector<AdamWSlot>& slots, const AdamWShared& hyper, int64_t step, float grad_scale);

// bias_E may be an empty Tensor.
void router_forward(const Tensor& topk_idx_NK, const Tensor& topk_w_NK, const Tensor& scores_NE,
                    const Tensor& logits_NE, const Tensor& bias_E, RouterKind kind);
// Noisy top-k gating (Shazeer et al. 2017), F32: logits_NE += z * softplus(noise_logits_NE),
// z standard normal drawn like multiply_noise's (stream, key_4: I32 [4]); and
// its backward, dnoise_logits_NE = dlogits_NE * z * sigmoid(noise_logits_NE) (WRITTEN).
void router_noise_forward(const Tensor& logits_NE, const Tensor& noise_logits_NE, const Tensor& key_4, uint64_t stream);
void router_noise_backward(const Tensor& dnoise_logits_NE, const Tensor& dlogits_NE, const Tensor& noise_logits_NE,
                           const Tensor& key_4, uint64_t stream);
void router_backward(const Tensor& dlogits_NE, const Tensor& dtopk_w_NK, const Tensor& topk_idx_NK,
                     const Tensor& topk_w_NK, const Tensor& scores_NE, RouterKind kind);
// aux_3 (F32 [3]) WRITTEN: the unweighted load-balance, z and sequence-
// balance losses, left where the routing runs (no host sync); daux_logits_NE
// WRITTEN (may be empty). N = B*T tokens as sequences of T.
void router_aux_losses(const Tensor& aux_3, const Tensor& daux_logits_NE, const Tensor& logits_NE,
                       const Tensor& scores_NE, const Tensor& topk_idx_NK, int64_t T, RouterKind kind, float w_lb,
                       float w_z, float w_seq, float grad_scale);

// Sorts (token, slot) pairs by expert with capacity: each expert keeps its
// first `capacity` pairs in token order, or, with priority_NK (F32 [N, K]),
// those of highest priority (expert choice: the experts take the tokens
// that score them highest). The kept row count M is offsets_E1[E], left on
// the routing's device: nothing downstream needs it on the host (the ops
// below go through pair_row_NK and the offsets), so a step never copies
// routing counts to the host. row_pair_M must hold N*K entries. See cpu_ops.h
// for the layout.
void moe_plan(const Tensor& offsets_E1, const Tensor& row_pair_M, const Tensor& pair_row_NK, const Tensor& topk_idx_NK,
              int64_t capacity, const Tensor& priority_NK = Tensor{});
// routed_E[e] += pairs that chose expert e (before capacity); kept_E[e] +=
// rows expert e computes (offsets[e+1] - offsets[e]). I32, accumulated where
// the routing lives, so a step's counts reach the host once, after its last
// micro-batch, not once per layer and micro-batch.
void moe_count_experts(const Tensor& routed_E, const Tensor& kept_E, const Tensor& topk_idx_NK,
                       const Tensor& offsets_E1);
// Token by token through the plan's inverse map pair_row_NK (-1: dropped), so
// xs may be any buffer of at least M rows (the MoE layer keeps N*K): rows
// past the kept ones are neither read nor written.
// xs[pair_row[n,k]] = x[n] for every kept pair.
void moe_permute(const Tensor& xs_MD, const Tensor& x_ND, const Tensor& pair_row_NK);
// dx[n] += the kept rows of token n, in ascending row order (deterministic, no atomics).
void moe_permute_backward(const Tensor& dx_ND, const Tensor& dxs_MD, const Tensor& pair_row_NK);
// dst[i] = src[index[i]] for the index.numel() first rows of dst (I32
// index; dst and src of one dtype and row width). Expert parallelism's
// reorder between peer-major and expert-major rows: one launch on a GPU.
void gather_rows(const Tensor& dst_RD, const Tensor& src_RD, const Tensor& index_R);
void moe_unpermute(const Tensor& out_ND, const Tensor& ys_MD, const Tensor& topk_w_NK, const Tensor& pair_row_NK);
void moe_unpermute_backward(const Tensor& dys_MD, const Tensor& dtopk_w_NK, const Tensor& dout_ND, const Tensor& ys_MD,
                            const Tensor& topk_w_NK, const Tensor& pair_row_NK);
// W: [E, I, O]; rows of expert e are [offsets[e], offsets[e+1]). For device
// tensors the offsets stay on the device (no host sync). dx may be empty.
void grouped_matmul_forward(const Tensor& out_MO, const Tensor& x_MI, const Tensor& w_EIO, const Tensor& offsets_E1);
void grouped_matmul_backward(const Tensor& dx_MI, const Tensor& dw_EIO, const Tensor& dout_MO, const Tensor& x_MI,
                             const Tensor& w_EIO, const Tensor& offsets_E1);

// ---- device scratch, sized when a layer is built ----------------------------
// The CUDA kernels of attention, rmsnorm_backward and router_aux_losses keep
// a scratch buffer between calls. Layers reserve it for their shapes when
// they are built, so that the CUDA graphs of a step capture its final address
// (src/kernels/cuda/device_scratch.h). Nothing on the CPU. For attention this
// also decides the implementation of the shape and, for cuDNN's, builds its
// plans.
void reserve_attention(Device device, int64_t B, int64_t T, int64_t H, int64_t G, int64_t Dh, DType dtype);
void reserve_rmsnorm_backward(Device device, int64_t N, int64_t D);
// The expert GEMMs of a weight [E, I, O]: decides their implementation and,
// for CUTLASS's, builds its kernels' arguments (gpu_kernels.h).
void reserve_grouped_matmul(Device device, int64_t E, int64_t I, int64_t O, DType dtype);
void reserve_router_aux_losses(Device device, int64_t N, int64_t T, int64_t E);

}  // namespace moe::ops
