// The CPU reference kernels: every numeric op of the model, forward and
// backward, in fp32 on host memory. Matmuls go through OpenBLAS. These are the
// numbers every other backend (CUDA, bf16) is held against.
//
// Shape legend (names carry their shapes): N tokens (= B*T), B sequences,
// T sequence length, D model dim, H query heads, G key/value heads, Dh head
// dim, V vocab, E experts, K experts per token (top-k), F hidden, I/O in/out
// features, M rows after permuting tokens by expert.
//
// Conventions:
// - Every backward ACCUMULATES (+=) into its gradient outputs; callers zero
//   them when they want a fresh gradient. (Residual connections then add for
//   free.) Exceptions say so explicitly.
// - Pointers to const are inputs; nothing is allocated by a kernel except
//   small per-call scratch noted at the function.
#pragma once

#include <cstdint>

#include "src/kernels/cpu/counter_noise.h"  // noise::Distribution

namespace moe::cpu {

// ---- embedding ------------------------------------------------------------
void embedding_forward(float* out_ND, const int32_t* tokens_N, const float* table_VD, int64_t N, int64_t D);
void embedding_backward(float* dtable_VD, const float* dout_ND, const int32_t* tokens_N, int64_t N, int64_t D);

// ---- RMSNorm: out = x * rsqrt(mean(x^2) + eps) * w -------------------------
void rmsnorm_forward(float* out_ND, float* rstd_N, const float* x_ND, const float* w_D, int64_t N, int64_t D,
                     float eps);
void rmsnorm_backward(float* dx_ND, float* dw_D, const float* dout_ND, const float* x_ND, const float* w_D,
                      const float* rstd_N, int64_t N, int64_t D);

// ---- linear: out = x W^T with W [O, I] as in nn.Linear ----------------------
void matmul_forward(float* out_NO, const float* x_NI, const float* w_OI, int64_t N, int64_t I, int64_t O);
// dx_NI may be null (no input gradient wanted).
void matmul_backward(float* dx_NI, float* dw_OI, const float* dout_NO, const float* x_NI, const float* w_OI, int64_t N,
                     int64_t I, int64_t O);

// matmul with FP8 numerics (src/core/fp8.h): each operand quantised with the
// power-of-two scale of its own amax and dequantised, then the fp32 GEMMs:
//   out = Q4(x) Q4(W)^T;  dx += Q5(dout) Q4(W);  dW += Q5(dout)^T Q4(x)
// (Q4 = E4M3, Q5 = E5M2). The backward is the straight-through gradient: the
// rounding counts as the identity. dx may be null.
void fp8_matmul_forward(float* out_NO, const float* x_NI, const float* w_OI, int64_t N, int64_t I, int64_t O);
void fp8_matmul_backward(float* dx_NI, float* dw_OI, const float* dout_NO, const float* x_NI, const float* w_OI,
                         int64_t N, int64_t I, int64_t O);
// out[i] = Q(x[i]) in one format (fp8::Format as an int: 0 E4M3, 1 E5M2),
// with the scale of x's own amax; out may be x.
void fp8_quantize_dequantize(float* out, const float* x, int64_t n, int format);

// ---- RoPE, rotate-half convention (HF Llama/Mixtral) ------------------------
// x is [B, T, H, Dh] with N = B*T rows; the token in row n has position n % T.
// Channel pairs (i, i + Dh/2) rotate by angle pos * theta^(-2i/Dh).
// Both work in place (backward OVERWRITES, not +=): it rotates the gradient
// by the opposite angle.
void rope_forward(float* x_NHDh, int64_t N, int64_t T, int64_t H, int64_t Dh, float theta, int64_t first_position = 0);
void rope_backward(float* dx_NHDh, int64_t N, int64_t T, int64_t H, int64_t Dh, float theta);

// ---- causal attention with grouped KV heads ---------------------------------
// q, out: [B, T, H, Dh]; k, v: [B, T, G, Dh]; query head h reads KV head h / (H/G).
// Scale 1/sqrt(Dh). Forward saves only lse_BHT (log-sum-exp of each score row);
// backward recomputes the probabilities from it (no T x T matrix is kept).
void attention_forward(float* out, float* lse_BHT, const float* q, const float* k, const float* v, int64_t B, int64_t T,
                       int64_t H, int64_t G, int64_t Dh);
// One query row per head against the first `length` rows of a KV cache:
// q, out [H, Dh]; k, v [T_max, G, Dh].
void attention_decode(float* out_HDh, const float* q_HDh, const float* k_TGDh, const float* v_TGDh, int64_t length,
                      int64_t H, int64_t G, int64_t Dh);
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse_BHT, int64_t B, int64_t T, int64_t H,
                        int64_t G, int64_t Dh);

// ---- SwiGLU gate: out = silu(a) * b, elementwise over n values ------------
// The backward WRITES da and db.
void swiglu_forward(float* out, const float* a, const float* b, int64_t n);
void swiglu_backward(float* da, float* db, const float* dout, const float* a, const float* b, int64_t n);

// ---- cross-entropy over one chunk of rows ------------------------------------
// loss_n[i] = logsumexp(logits[i]) - logits[i][targets[i]] (computed in double
// per row for the sum, stored as float). dlogits = (softmax(logits) - onehot) *
// grad_scale is WRITTEN (not accumulated) and may alias logits (in place).
void cross_entropy_forward_backward(float* loss_n, float* dlogits_nV, const float* logits_nV, const int32_t* targets_n,
                                    int64_t n, int64_t V, float grad_scale);

// ---- optimizer ----------------------------------------------------------------
// PyTorch's AdamW, in this order: g = grad * grad_scale; p *= 1 - lr*wd;
// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
// `step` t starts at 1.
void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                float eps, float weight_decay, int64_t step, float grad_scale);
// out = a + b, elementwise; out may be a or b.
void add(float* out, const float* a, const float* b, int64_t n);
// Sum of squares in double (for the global gradient norm).
double sum_squares(const float* x, int64_t n);
void scale_inplace(float* x, int64_t n, float factor);
// out = x * noise of `stream` for the micro-batch in key_words (counter_noise.h); out may be x.
void multiply_noise(float* out, const float* x, int64_t n, const int32_t* key_words, uint64_t stream,
                    const noise::Distribution& d);
// The same over R rows of C values, row r drawing as row row_id_R2[r][1] of
// global micro-batch row_id_R2[r][0], in micro-batches of
// rows_per_micro_batch rows (the key's own micro-batch is not read; a row
// outside throws std::logic_error).
void multiply_noise_rows(float* out, const float* x, int64_t R, int64_t C, const int32_t* row_id_R2,
                         int64_t rows_per_micro_batch, const int32_t* key_words, uint64_t stream,
                         const noise::Distribution& d);
// ids_R2[r] = (the key's global micro-batch, rows_R[r]): the row ids of
// multiply_noise_rows for rows of this micro-batch.
void noise_row_ids(int32_t* ids_R2, const int32_t* rows_R, int64_t R, const int32_t* key_words);

// ---- dtype casts: fp32 -> bf16 rounds to nearest even; bf16 -> fp32 is exact ----
void cast_f32_to_bf16(uint16_t* out, const float* in, int64_t n);
void cast_bf16_to_f32(float* out, const uint16_t* in, int64_t n);

// ---- gather_rows: dst row i = src row index[i], row_bytes bytes each (any dtype) ----
// An index outside [0, rows) throws std::logic_error (a bug in the caller's plan).
void gather_rows(void* dst, const void* src, const int32_t* index_R, int64_t R, int64_t rows, int64_t row_bytes);

// ---- MoE: router ----------------------------------------------------------------
enum class RouterKind { kSoftmaxTopK, kSigmoidTopK };

// scores_NE: softmax(logits) (softmax_topk) or sigmoid(logits) (sigmoid_topk).
// Picks the K experts with the largest scores (+ bias_E for sigmoid_topk; bias
// may be null = 0), ties to the lower index, in descending order of that
// selection value. topk_w_NK = the picked scores renormalised to sum 1 (the
// bias is not in the weights). softmax_topk ignores bias_E.
void router_forward(int32_t* topk_idx_NK, float* topk_w_NK, float* scores_NE, const float* logits_NE,
                    const float* bias_E, int64_t N, int64_t E, int64_t K, RouterKind kind);
// Noisy top-k gating (Shazeer et al. 2017): logits += z * softplus(noise_logits),
// z standard normal from the counter noise (counter_noise.h), n = N * E values;
// its backward WRITES dnoise_logits = dlogits * z * sigmoid(noise_logits).
void router_noise_forward(float* logits, const float* noise_logits, int64_t n, const int32_t* key_words,
                          uint64_t stream);
void router_noise_backward(float* dnoise_logits, const float* dlogits, const float* noise_logits, int64_t n,
                           const int32_t* key_words, uint64_t stream);
// dlogits_NE += d(topk_w)/d(logits)^T dtopk_w_NK.
void router_backward(float* dlogits_NE, const float* dtopk_w_NK, const int32_t* topk_idx_NK, const float* topk_w_NK,
                     const float* scores_NE, int64_t N, int64_t E, int64_t K, RouterKind kind);

// Auxiliary losses of one MoE layer, over N = B*T tokens:
// - load_balance = E * sum_e f_e * P_e, f_e = share of the N*K (token, slot)
//   pairs that chose e (no gradient; so a perfectly balanced router gives 1,
//   where HF Mixtral's formula gives K), P_e = mean over tokens of the token's
//   normalised score (softmax probabilities; for sigmoid, scores / their row sum);
// - z_loss = mean over tokens of logsumexp(logits)^2;
// - sequence_balance = the load_balance formula within each sequence of T
//   tokens, averaged over the B sequences.
// daux_logits_NE is WRITTEN with grad_scale * d(w_lb*load_balance +
// w_z*z_loss + w_seq*sequence_balance)/d(logits); it may be null.
struct RouterAux {
  double load_balance = 0;
  double z_loss = 0;
  double sequence_balance = 0;
};
RouterAux router_aux_losses(float* daux_logits_NE, const float* logits_NE, const float* scores_NE,
                            const int32_t* topk_idx_NK, int64_t B, int64_t T, int64_t E, int64_t K, RouterKind kind,
                            float w_lb, float w_z, float w_seq, float grad_scale);

// ---- MoE: dispatch plan, permute / unpermute ------------------------------------
// Sorts the N*K (token, slot) pairs by expert, token order within each expert.
// With capacity > 0 each expert keeps `capacity` of its pairs and the rest are
// dropped (capacity <= 0: no limit): its first ones in token order, or, with
// priority_NK (may be null), the ones of highest priority (ties: the earlier
// pair), still placed in token order. Expert ids must be in [0, E) and
// distinct within a token. Outputs: offsets_E1 (E+1 prefix sums of kept rows
// per expert), row_pair_M (pair index n*K+k of each kept row, M = offsets[E]),
// pair_row_NK (row of each pair, -1 when dropped). Returns the dropped count.
int64_t moe_plan(int32_t* offsets_E1, int32_t* row_pair_M, int32_t* pair_row_NK, const int32_t* topk_idx_NK, int64_t N,
                 int64_t E, int64_t K, int64_t capacity, const float* priority_NK = nullptr);
// Both directions go token by token through pair_row (the plan's inverse
// map), so neither needs M: rows past the kept ones are never read or written.
// xs[pair_row[n,k]] = x[n] for every kept pair   (WRITTEN; other rows untouched)
void moe_permute(float* xs_MD, const float* x_ND, const int32_t* pair_row_NK, int64_t N, int64_t D, int64_t K);
// dx[n] += dxs[r] for the kept rows r of token n, in ascending row order
void moe_permute_backward(float* dx_ND, const float* dxs_MD, const int32_t* pair_row_NK, int64_t N, int64_t D,
                          int64_t K);
// out[n] += sum_k w[n,k] * ys[pair_row[n,k]]   (dropped pairs add nothing)
void moe_unpermute(float* out_ND, const float* ys_MD, const float* topk_w_NK, const int32_t* pair_row_NK, int64_t N,
                   int64_t D, int64_t K);
// dys[pair_row[n,k]] = w[n,k] * dout[n] (WRITTEN, every kept row);
// dtopk_w[n,k] = dot(dout[n], ys[pair_row[n,k]]) (WRITTEN; 0 when dropped).
void moe_unpermute_backward(float* dys_MD, float* dtopk_w_NK, const float* dout_ND, const float* ys_MD,
                            const float* topk_w_NK, const int32_t* pair_row_NK, int64_t N, int64_t D, int64_t K);
// routed_E[e] += pairs of topk_idx that chose e (before capacity); kept_E[e]
// += offsets[e+1] - offsets[e] (the rows expert e computes). P = N*K pairs.
void moe_count_experts(int32_t* routed_E, int32_t* kept_E, const int32_t* topk_idx_P, int64_t P,
                       const int32_t* offsets_E1, int64_t E);

// ---- MoE: grouped matmul over the rows of each expert ---------------------------
// For each expert e, rows [offsets[e], offsets[e+1]): out = x W[e], W [E, I, O].
// Experts with no rows are skipped (their dW stays as it was). Forward WRITES
// out; backward accumulates, and skips dx where dx_MI is null.
void grouped_matmul_forward(float* out_MO, const float* x_MI, const float* w_EIO, const int32_t* offsets_E1, int64_t E,
                            int64_t I, int64_t O);
void grouped_matmul_backward(float* dx_MI, float* dw_EIO, const float* dout_MO, const float* x_MI, const float* w_EIO,
                             const int32_t* offsets_E1, int64_t E, int64_t I, int64_t O);

}  // namespace moe::cpu
