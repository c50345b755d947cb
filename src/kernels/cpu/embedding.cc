// Token embedding lookup. Legend: N tokens, D model dim, V vocab.
#include <algorithm>

#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

void embedding_forward(float* out_ND, const int32_t* tokens_N, const float* table_VD, int64_t N, int64_t D) {
  for (int64_t n = 0; n < N; ++n) {
    const float* row_D = table_VD + static_cast<int64_t>(tokens_N[n]) * D;
    std::copy(row_D, row_D + D, out_ND + n * D);
  }
}

// Serial on purpose: a token id repeated in the batch hits the same table row.
void embedding_backward(float* dtable_VD, const float* dout_ND, const int32_t* tokens_N, int64_t N, int64_t D) {
  for (int64_t n = 0; n < N; ++n) {
    float* drow_D = dtable_VD + static_cast<int64_t>(tokens_N[n]) * D;
    const float* dout_D = dout_ND + n * D;
    for (int64_t d = 0; d < D; ++d) drow_D[d] += dout_D[d];
  }
}

}  // namespace moe::cpu
