// Causal self-attention with grouped KV heads, flash-attention style: the
// forward keeps only the log-sum-exp of each score row and the backward
// recomputes the probabilities from it.
// Legend: B sequences, T length, H query heads, G kv heads, Dh head dim.
// q, out, dq, dout: [B, T, H, Dh]; k, v, dk, dv: [B, T, G, Dh]; lse: [B, H, T].
//
// Work goes by blocks of kQueryBlock query rows of one (sequence, head): the
// block's scores against its causal prefix of keys are one GEMM, read straight
// from the strided [B, T, heads, Dh] layout (leading dimension heads * Dh).
// Scratch: kQueryBlock x T floats (two in the backward), never a T x T
// matrix, kept per thread and grown only when T grows, so a training step
// allocates nothing here. Every element is written before it is read.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {
namespace {

// Per-thread scratch buffer `slot`, at least n floats.
std::vector<float>& scratch(int slot, int64_t n) {
  thread_local std::vector<float> buffers[2];
  std::vector<float>& b = buffers[slot];
  if (b.size() < static_cast<size_t>(n)) b.resize(static_cast<size_t>(n));
  return b;
}

constexpr int64_t kQueryBlock = 64;

// Query rows [t0, t1) of sequence b, query head h, which reads kv head g.
struct HeadView {
  int64_t b, h, g, t0, t1;
  int64_t rows() const { return t1 - t0; }
  // Causal: the block's last query sees keys [0, t1).
  int64_t keys() const { return t1; }
};

// s_RK[rows, keys] = scale * q_blk k^T over the block's causal prefix of keys.
// Entries right of the diagonal are computed too; callers mask them.
void block_scores(float* s_RK, const HeadView& view, const float* q, const float* k, int64_t T, int64_t H, int64_t G,
                  int64_t Dh) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(Dh));
  const float* q_blk = q + ((view.b * T + view.t0) * H + view.h) * Dh;
  const float* k_0 = k + (view.b * T * G + view.g) * Dh;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, view.rows(), view.keys(), Dh, scale, q_blk, H * Dh, k_0, G * Dh,
              0.0f, s_RK, view.keys());
}

}  // namespace

void attention_forward(float* out, float* lse_BHT, const float* q, const float* k, const float* v, int64_t B, int64_t T,
                       int64_t H, int64_t G, int64_t Dh) {
  const int64_t heads_per_group = H / G;
  std::vector<float>& p_RK = scratch(0, kQueryBlock * T);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      float* lse_T = lse_BHT + (b * H + h) * T;
      for (int64_t t0 = 0; t0 < T; t0 += kQueryBlock) {
        const HeadView view{b, h, h / heads_per_group, t0, std::min(t0 + kQueryBlock, T)};
        const int64_t keys = view.keys();
        block_scores(p_RK.data(), view, q, k, T, H, G, Dh);
        for (int64_t r = 0; r < view.rows(); ++r) {
          const int64_t t = t0 + r;
          float* p_K = p_RK.data() + r * keys;
          const float max = *std::max_element(p_K, p_K + t + 1);
          double sum = 0;
          for (int64_t j = 0; j <= t; ++j) {
            p_K[j] = std::exp(p_K[j] - max);
            sum += p_K[j];
          }
          const auto inv_sum = static_cast<float>(1.0 / sum);
          for (int64_t j = 0; j <= t; ++j) p_K[j] *= inv_sum;
          std::fill(p_K + t + 1, p_K + keys, 0.0f);
          lse_T[t] = max + static_cast<float>(std::log(sum));
        }
        // out[rows, Dh] = P[rows, keys] v[keys, Dh]
        const float* v_0 = v + (b * T * G + view.g) * Dh;
        float* out_blk = out + ((b * T + t0) * H + h) * Dh;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, view.rows(), Dh, keys, 1.0f, p_RK.data(), keys, v_0,
                    G * Dh, 0.0f, out_blk, H * Dh);
      }
    }
  }
}

// With P the probabilities and dP = dout v^T:
//   dS = P * (dP - rowsum(dout * out))   (softmax backward; rowsum(dout*out) = rowsum(P * dP))
//   dq += scale dS k,  dk += scale dS^T q,  dv += P^T dout.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse_BHT, int64_t B, int64_t T, int64_t H,
                        int64_t G, int64_t Dh) {
  const int64_t heads_per_group = H / G;
  const float scale = 1.0f / std::sqrt(static_cast<float>(Dh));
  std::vector<float>& p_RK = scratch(0, kQueryBlock * T);
  std::vector<float>& ds_RK = scratch(1, kQueryBlock * T);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const float* lse_T = lse_BHT + (b * H + h) * T;
      for (int64_t t0 = 0; t0 < T; t0 += kQueryBlock) {
        const HeadView view{b, h, h / heads_per_group, t0, std::min(t0 + kQueryBlock, T)};
        const int64_t rows = view.rows(), keys = view.keys();
        block_scores(p_RK.data(), view, q, k, T, H, G, Dh);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t t = t0 + r;
          float* p_K = p_RK.data() + r * keys;
          for (int64_t j = 0; j <= t; ++j) p_K[j] = std::exp(p_K[j] - lse_T[t]);
          std::fill(p_K + t + 1, p_K + keys, 0.0f);
        }

        const int64_t q_off = ((b * T + t0) * H + h) * Dh;  // same layout for q, dq, out, dout
        const int64_t kv_off = (b * T * G + view.g) * Dh;   // same layout for k, dk, v, dv
        // dP[rows, keys] = dout[rows, Dh] v^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keys, Dh, 1.0f, dout + q_off, H * Dh, v + kv_off,
                    G * Dh, 0.0f, ds_RK.data(), keys);
        for (int64_t r = 0; r < rows; ++r) {
          const float* dout_Dh = dout + q_off + r * H * Dh;
          const float* out_Dh = out + q_off + r * H * Dh;
          double delta = 0;
          for (int64_t d = 0; d < Dh; ++d) delta += static_cast<double>(dout_Dh[d]) * out_Dh[d];
          const auto delta_f = static_cast<float>(delta);
          const float* p_K = p_RK.data() + r * keys;
          float* ds_K = ds_RK.data() + r * keys;
          for (int64_t j = 0; j < keys; ++j) ds_K[j] = p_K[j] * (ds_K[j] - delta_f);
        }
        // dq[rows, Dh] += scale dS[rows, keys] k[keys, Dh]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, Dh, keys, scale, ds_RK.data(), keys, k + kv_off,
                    G * Dh, 1.0f, dq + q_off, H * Dh);
        // dk[keys, Dh] += scale dS^T q[rows, Dh]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, keys, Dh, rows, scale, ds_RK.data(), keys, q + q_off,
                    H * Dh, 1.0f, dk + kv_off, G * Dh);
        // dv[keys, Dh] += P^T dout[rows, Dh]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, keys, Dh, rows, 1.0f, p_RK.data(), keys, dout + q_off,
                    H * Dh, 1.0f, dv + kv_off, G * Dh);
      }
    }
  }
}

}  // namespace moe::cpu

namespace moe::cpu {

void attention_decode(float* out_HDh, const float* q_HDh, const float* k_TGDh, const float* v_TGDh, int64_t length,
                      int64_t H, int64_t G, int64_t Dh) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(Dh));
  std::vector<float> p(static_cast<size_t>(length));
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / (H / G);
    const float* q = q_HDh + h * Dh;
    float max = -INFINITY;
    for (int64_t t = 0; t < length; ++t) {
      const float* k = k_TGDh + (t * G + g) * Dh;
      float s = 0;
      for (int64_t d = 0; d < Dh; ++d) s += q[d] * k[d];
      p[static_cast<size_t>(t)] = scale * s;
      max = std::max(max, scale * s);
    }
    float sum = 0;
    for (int64_t t = 0; t < length; ++t) sum += p[static_cast<size_t>(t)] = std::exp(p[static_cast<size_t>(t)] - max);
    float* out = out_HDh + h * Dh;
    for (int64_t d = 0; d < Dh; ++d) out[d] = 0;
    for (int64_t t = 0; t < length; ++t) {
      const float w = p[static_cast<size_t>(t)] / sum;
      const float* v = v_TGDh + (t * G + g) * Dh;
      for (int64_t d = 0; d < Dh; ++d) out[d] += w * v[d];
    }
  }
}

}  // namespace moe::cpu
