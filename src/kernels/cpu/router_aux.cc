// Auxiliary router losses (load balance, z-loss, sequence-wise balance) and
// their gradient w.r.t. the router logits.
// Legend: B sequences of T tokens, N = B*T, E experts, K experts per token;
// q = the normalised score (softmax probabilities, or sigmoid scores divided by
// their row sum), f = share of (token, slot) pairs per expert.
//
// Gradients (f held constant: the choice is piecewise constant):
//   load_balance = E sum_e f_e P_e, P_e = mean_n q_ne  =>  dLB/dq_ne = E f_e / N
//   sequence     = mean_b E sum_e f_be P_be            =>  dSEQ/dq_ne = E f_be / (T B)
//   z_loss       = mean_n lse_n^2                      =>  dZ/dl_nj = 2 lse_n softmax(l_n)_j / N
// and with a_e = dLoss/dq_e, through the normalisation:
//   softmax: dl_j = p_j (a_j - sum_e p_e a_e)
//   sigmoid: q = s / R, R = sum_e s_e, ds/dl = s (1 - s):
//            dl_j = q_j (1 - s_j) (a_j - sum_e q_e a_e)
#include <algorithm>
#include <cmath>
#include <vector>

#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {
namespace {

void count_choices(std::vector<int64_t>& counts_E, const int32_t* topk_idx, int64_t pairs) {
  std::fill(counts_E.begin(), counts_E.end(), 0);
  for (int64_t i = 0; i < pairs; ++i) ++counts_E[topk_idx[i]];
}

double log_sum_exp(const float* l_E, int64_t E) {
  double max = l_E[0];
  for (int64_t e = 1; e < E; ++e) max = std::fmax(max, static_cast<double>(l_E[e]));
  double sum = 0;
  for (int64_t e = 0; e < E; ++e) sum += std::exp(l_E[e] - max);
  return max + std::log(sum);
}

}  // namespace

// Scratch: five vectors of E counts or sums per call.
RouterAux router_aux_losses(float* daux_logits_NE, const float* logits_NE, const float* scores_NE,
                            const int32_t* topk_idx_NK, int64_t B, int64_t T, int64_t E, int64_t K, RouterKind kind,
                            float w_lb, float w_z, float w_seq, float grad_scale) {
  const int64_t N = B * T;
  const bool sigmoid = kind == RouterKind::kSigmoidTopK;
  std::vector<int64_t> counts_E(E), seq_counts_E(E);
  std::vector<double> P_E(E, 0.0), seq_P_E(E), a_E(E);
  count_choices(counts_E, topk_idx_NK, N * K);

  RouterAux aux;
  for (int64_t b = 0; b < B; ++b) {
    count_choices(seq_counts_E, topk_idx_NK + b * T * K, T * K);
    std::fill(seq_P_E.begin(), seq_P_E.end(), 0.0);
    // dLoss/dq_e is the same for every token of the sequence.
    for (int64_t e = 0; e < E; ++e)
      a_E[e] = w_lb * E * counts_E[e] / static_cast<double>(N * K) / N +
               w_seq * E * seq_counts_E[e] / static_cast<double>(T * K) / (T * B);
    for (int64_t n = b * T; n < (b + 1) * T; ++n) {
      const float* l_E = logits_NE + n * E;
      const float* s_E = scores_NE + n * E;
      double row_sum = 1.0;  // softmax scores are already normalised
      if (sigmoid) {
        row_sum = 0;
        for (int64_t e = 0; e < E; ++e) row_sum += s_E[e];
      }
      const double lse = log_sum_exp(l_E, E);
      aux.z_loss += lse * lse;

      double qa = 0;
      for (int64_t e = 0; e < E; ++e) {
        const double q = s_E[e] / row_sum;
        P_E[e] += q;
        seq_P_E[e] += q;
        qa += q * a_E[e];
      }
      if (!daux_logits_NE) continue;
      float* dl_E = daux_logits_NE + n * E;
      const double dz = 2.0 * w_z * lse / N;
      for (int64_t e = 0; e < E; ++e) {
        const double q = s_E[e] / row_sum;
        const double dq = sigmoid ? q * (1.0 - s_E[e]) * (a_E[e] - qa) : q * (a_E[e] - qa);
        dl_E[e] = static_cast<float>(grad_scale * (dq + dz * std::exp(l_E[e] - lse)));
      }
    }
    double seq_balance = 0;
    for (int64_t e = 0; e < E; ++e) seq_balance += seq_counts_E[e] / static_cast<double>(T * K) * (seq_P_E[e] / T);
    aux.sequence_balance += E * seq_balance / B;
  }
  for (int64_t e = 0; e < E; ++e) aux.load_balance += counts_E[e] / static_cast<double>(N * K) * (P_E[e] / N);
  aux.load_balance *= E;
  aux.z_loss /= N;
  return aux;
}

}  // namespace moe::cpu
