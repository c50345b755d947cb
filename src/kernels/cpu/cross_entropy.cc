// Softmax cross-entropy over rows of logits, loss and gradient in one pass.
// Legend: n rows, V vocab.
#include <algorithm>
#include <cmath>

#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

// In-place safe: each row's loss is computed from its logits before any
// gradient value of that row is written, and logit j is read before dlogit j.
void cross_entropy_forward_backward(float* loss_n, float* dlogits_nV, const float* logits_nV, const int32_t* targets_n,
                                    int64_t n, int64_t V, float grad_scale) {
  for (int64_t r = 0; r < n; ++r) {
    const float* x_V = logits_nV + r * V;
    const float max = *std::max_element(x_V, x_V + V);
    // Each term is in (0, 1] after subtracting the max, so fp32 exp is accurate;
    // the double sum keeps large vocabularies from losing the small terms.
    double sum = 0;
    for (int64_t j = 0; j < V; ++j) sum += std::exp(x_V[j] - max);
    const double lse = max + std::log(sum);
    const int32_t target = targets_n[r];
    loss_n[r] = static_cast<float>(lse - x_V[target]);

    const auto lse_f = static_cast<float>(lse);
    float* dx_V = dlogits_nV + r * V;
    for (int64_t j = 0; j < V; ++j) dx_V[j] = std::exp(x_V[j] - lse_f) * grad_scale;
    dx_V[target] -= grad_scale;
  }
}

}  // namespace moe::cpu
