// Dispatch: the plan that groups (token, slot) pairs by expert, and the
// gathers/scatters that move rows between token order and expert order.
// Legend: N tokens, K slots per token, E experts, D row width, M kept rows.
#include <algorithm>
#include <cstring>
#include <vector>

#include "src/core/float_order.h"
#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

namespace {

// pair_row[p] = 0 for the `capacity` pairs of each expert with the highest
// priority (ties: the lower pair index), -1 for the others. Priorities compare
// as ordered_bits, as the GPU's radix selection does.
void keep_by_priority(int32_t* pair_row_P, const int32_t* topk_idx_P, const float* priority_P, int64_t P, int64_t E,
                      int64_t capacity) {
  std::vector<std::vector<int32_t>> pairs_of(static_cast<size_t>(E));
  for (int64_t p = 0; p < P; ++p) pairs_of[topk_idx_P[p]].push_back(static_cast<int32_t>(p));
  for (std::vector<int32_t>& pairs : pairs_of) {
    const auto first = [priority_P](int32_t a, int32_t b) {
      const uint32_t ka = ordered_bits(priority_P[a]), kb = ordered_bits(priority_P[b]);
      return ka > kb || (ka == kb && a < b);
    };
    const auto kept = static_cast<int64_t>(pairs.size()) > capacity ? pairs.begin() + capacity : pairs.end();
    std::nth_element(pairs.begin(), kept, pairs.end(), first);
    for (auto it = pairs.begin(); it != pairs.end(); ++it) pair_row_P[*it] = it < kept ? 0 : -1;
  }
}

}  // namespace

// A counting sort in three passes over the pairs, using offsets_E1 itself as
// the per-expert cursor (no scratch). Pairs are visited in index order n*K+k,
// and a token picks an expert at most once, so "first in pair order" is "first
// in token order": both the order within an expert and who overflows the
// capacity follow token order (with a priority, the kept pairs are chosen
// first, then placed in the same order).
int64_t moe_plan(int32_t* offsets_E1, int32_t* row_pair_M, int32_t* pair_row_NK, const int32_t* topk_idx_NK, int64_t N,
                 int64_t E, int64_t K, int64_t capacity, const float* priority_NK) {
  const int64_t pairs = N * K;
  const bool by_priority = priority_NK != nullptr && capacity > 0;
  if (by_priority) keep_by_priority(pair_row_NK, topk_idx_NK, priority_NK, pairs, E, capacity);
  // 1. offsets[e+1] = kept rows of e; pair_row marks dropped pairs with -1.
  std::memset(offsets_E1, 0, sizeof(int32_t) * (E + 1));
  for (int64_t p = 0; p < pairs; ++p) {
    int32_t& kept = offsets_E1[topk_idx_NK[p] + 1];
    const bool keep = by_priority ? pair_row_NK[p] == 0 : capacity <= 0 || kept < capacity;
    kept += keep;
    pair_row_NK[p] = keep ? 0 : -1;
  }
  // 2. offsets[e+1] = first row of e (an exclusive prefix sum, shifted by one).
  int32_t start = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int32_t rows = offsets_E1[e + 1];
    offsets_E1[e + 1] = start;
    start += rows;
  }
  // 3. Place each kept pair; each cursor offsets[e+1] ends at the end of e,
  //    which is the start of e+1, so offsets come out right.
  for (int64_t p = 0; p < pairs; ++p) {
    if (pair_row_NK[p] < 0) continue;
    const int32_t row = offsets_E1[topk_idx_NK[p] + 1]++;
    row_pair_M[row] = static_cast<int32_t>(p);
    pair_row_NK[p] = row;
  }
  return pairs - offsets_E1[E];
}

void moe_permute(float* xs_MD, const float* x_ND, const int32_t* pair_row_NK, int64_t N, int64_t D, int64_t K) {
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < K; ++k) {
      const int32_t row = pair_row_NK[n * K + k];
      if (row >= 0) std::memcpy(xs_MD + row * D, x_ND + n * D, sizeof(float) * D);
    }
  }
}

void moe_permute_backward(float* dx_ND, const float* dxs_MD, const int32_t* pair_row_NK, int64_t N, int64_t D,
                          int64_t K) {
  std::vector<int32_t> rows;
  for (int64_t n = 0; n < N; ++n) {
    rows.clear();
    for (int64_t k = 0; k < K; ++k) {
      if (pair_row_NK[n * K + k] >= 0) rows.push_back(pair_row_NK[n * K + k]);
    }
    std::sort(rows.begin(), rows.end());  // the same order of adds as the CUDA kernel
    float* dx = dx_ND + n * D;
    for (int32_t row : rows) {
      const float* dxs = dxs_MD + static_cast<int64_t>(row) * D;
      for (int64_t d = 0; d < D; ++d) dx[d] += dxs[d];
    }
  }
}

void moe_unpermute(float* out_ND, const float* ys_MD, const float* topk_w_NK, const int32_t* pair_row_NK, int64_t N,
                   int64_t D, int64_t K) {
  for (int64_t n = 0; n < N; ++n) {
    float* out = out_ND + n * D;
    for (int64_t k = 0; k < K; ++k) {
      const int32_t row = pair_row_NK[n * K + k];
      if (row < 0) continue;
      const float w = topk_w_NK[n * K + k];
      const float* y = ys_MD + row * D;
      for (int64_t d = 0; d < D; ++d) out[d] += w * y[d];
    }
  }
}

void moe_unpermute_backward(float* dys_MD, float* dtopk_w_NK, const float* dout_ND, const float* ys_MD,
                            const float* topk_w_NK, const int32_t* pair_row_NK, int64_t N, int64_t D, int64_t K) {
  for (int64_t n = 0; n < N; ++n) {
    const float* dout = dout_ND + n * D;
    for (int64_t k = 0; k < K; ++k) {
      const int32_t row = pair_row_NK[n * K + k];
      if (row < 0) {
        dtopk_w_NK[n * K + k] = 0;
        continue;
      }
      const float w = topk_w_NK[n * K + k];
      const float* y = ys_MD + row * D;
      float* dy = dys_MD + row * D;
      double dw = 0;
      for (int64_t d = 0; d < D; ++d) {
        dy[d] = w * dout[d];
        dw += static_cast<double>(dout[d]) * y[d];
      }
      dtopk_w_NK[n * K + k] = static_cast<float>(dw);
    }
  }
}

void moe_count_experts(int32_t* routed_E, int32_t* kept_E, const int32_t* topk_idx_P, int64_t P,
                       const int32_t* offsets_E1, int64_t E) {
  for (int64_t p = 0; p < P; ++p) routed_E[topk_idx_P[p]] += 1;
  for (int64_t e = 0; e < E; ++e) kept_E[e] += offsets_E1[e + 1] - offsets_E1[e];
}

}  // namespace moe::cpu
