// Router: scores, top-k choice and renormalised weights, and their gradient.
// Legend: N tokens, E experts, K experts per token.
#include <cmath>

#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {
namespace {

void softmax_row(float* p_E, const float* l_E, int64_t E) {
  float max = l_E[0];
  for (int64_t e = 1; e < E; ++e) max = std::fmax(max, l_E[e]);
  double sum = 0;
  for (int64_t e = 0; e < E; ++e) sum += std::exp(static_cast<double>(l_E[e]) - max);
  for (int64_t e = 0; e < E; ++e) p_E[e] = static_cast<float>(std::exp(static_cast<double>(l_E[e]) - max) / sum);
}

void sigmoid_row(float* s_E, const float* l_E, int64_t E) {
  for (int64_t e = 0; e < E; ++e) s_E[e] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(l_E[e]))));
}

// Keeps idx_K sorted by descending value while scanning e = 0..E-1 (insertion,
// O(E*K)). Strict comparisons leave an equal value behind the earlier (lower)
// index, which is the tie rule. The selection values are parked in val_K, the
// caller's weight row, so no scratch is needed.
void select_topk(int32_t* idx_K, float* val_K, const float* scores_E, const float* bias_E, int64_t E, int64_t K) {
  int64_t filled = 0;
  for (int64_t e = 0; e < E; ++e) {
    const float v = bias_E ? scores_E[e] + bias_E[e] : scores_E[e];
    if (filled == K && !(v > val_K[K - 1])) continue;
    int64_t pos = filled < K ? filled++ : K - 1;
    while (pos > 0 && val_K[pos - 1] < v) {
      val_K[pos] = val_K[pos - 1];
      idx_K[pos] = idx_K[pos - 1];
      --pos;
    }
    val_K[pos] = v;
    idx_K[pos] = static_cast<int32_t>(e);
  }
}

}  // namespace

void router_forward(int32_t* topk_idx_NK, float* topk_w_NK, float* scores_NE, const float* logits_NE,
                    const float* bias_E, int64_t N, int64_t E, int64_t K, RouterKind kind) {
  for (int64_t n = 0; n < N; ++n) {
    const float* l_E = logits_NE + n * E;
    float* s_E = scores_NE + n * E;
    int32_t* idx_K = topk_idx_NK + n * K;
    float* w_K = topk_w_NK + n * K;
    if (kind == RouterKind::kSoftmaxTopK) {
      softmax_row(s_E, l_E, E);
      select_topk(idx_K, w_K, s_E, nullptr, E, K);  // the bias only steers sigmoid routing
    } else {
      sigmoid_row(s_E, l_E, E);
      select_topk(idx_K, w_K, s_E, bias_E, E, K);
    }
    double picked = 0;
    for (int64_t k = 0; k < K; ++k) picked += s_E[idx_K[k]];
    for (int64_t k = 0; k < K; ++k) w_K[k] = static_cast<float>(s_E[idx_K[k]] / picked);
  }
}

// With w_k = s_k / S (S = sum of the picked scores) and g = dtopk_w:
//   dL/ds_k = (g_k - <g, w>) / S for picked k, 0 otherwise.
// softmax: the softmax Jacobian adds -p_e * sum_j p_j dL/ds_j, and that sum is
//   sum_k w_k (g_k - <g, w>) = 0 because the weights sum to 1; what is left is
//   p_k (g_k - <g, w>) / S = w_k (g_k - <g, w>), only on picked logits.
// sigmoid: ds/dl = s (1 - s), giving w_k (1 - s_k) (g_k - <g, w>).
void router_backward(float* dlogits_NE, const float* dtopk_w_NK, const int32_t* topk_idx_NK, const float* topk_w_NK,
                     const float* scores_NE, int64_t N, int64_t E, int64_t K, RouterKind kind) {
  for (int64_t n = 0; n < N; ++n) {
    const float* g_K = dtopk_w_NK + n * K;
    const float* w_K = topk_w_NK + n * K;
    const int32_t* idx_K = topk_idx_NK + n * K;
    double gw = 0;
    for (int64_t k = 0; k < K; ++k) gw += static_cast<double>(g_K[k]) * w_K[k];
    for (int64_t k = 0; k < K; ++k) {
      const int64_t e = idx_K[k];
      double d = w_K[k] * (g_K[k] - gw);
      if (kind == RouterKind::kSigmoidTopK) d *= 1.0 - scores_NE[n * E + e];
      dlogits_NE[n * E + e] += static_cast<float>(d);
    }
  }
}

}  // namespace moe::cpu
