// RMSNorm: out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps).
// Legend: N rows, D features.
#include <cmath>

#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

void rmsnorm_forward(float* out_ND, float* rstd_N, const float* x_ND, const float* w_D, int64_t N, int64_t D,
                     float eps) {
  for (int64_t n = 0; n < N; ++n) {
    const float* x_D = x_ND + n * D;
    // Double keeps the mean of squares exact enough for D in the thousands.
    double sum_sq = 0;
    for (int64_t d = 0; d < D; ++d) sum_sq += static_cast<double>(x_D[d]) * x_D[d];
    const auto rstd = static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(D) + eps));
    rstd_N[n] = rstd;
    float* out_D = out_ND + n * D;
    for (int64_t d = 0; d < D; ++d) out_D[d] = x_D[d] * rstd * w_D[d];
  }
}

// With g = dout * w:  dx = rstd * g - rstd^3 * x * mean(g * x);  dw = sum_n dout * x * rstd.
void rmsnorm_backward(float* dx_ND, float* dw_D, const float* dout_ND, const float* x_ND, const float* w_D,
                      const float* rstd_N, int64_t N, int64_t D) {
  for (int64_t n = 0; n < N; ++n) {
    const float* x_D = x_ND + n * D;
    const float* dout_D = dout_ND + n * D;
    const float rstd = rstd_N[n];
    double gx = 0;
    for (int64_t d = 0; d < D; ++d) gx += static_cast<double>(dout_D[d]) * w_D[d] * x_D[d];
    const auto coef = static_cast<float>(gx / static_cast<double>(D) * rstd * rstd * rstd);
    float* dx_D = dx_ND + n * D;
    for (int64_t d = 0; d < D; ++d) {
      dx_D[d] += rstd * dout_D[d] * w_D[d] - coef * x_D[d];
      dw_D[d] += dout_D[d] * x_D[d] * rstd;
    }
  }
}

}  // namespace moe::cpu
