// AdamW (decoupled weight decay) and the helpers of gradient-norm clipping.
#include <cmath>

#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

// Same operations as PyTorch's single-tensor AdamW: the bias corrections are
// formed in double (Python floats there), the update divides by
// sqrt(v) / sqrt(1 - b2^t) + eps with step size lr / (1 - b1^t). This is the
// documented formula, with PyTorch's rounding.
void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                float eps, float weight_decay, int64_t step, float grad_scale) {
  const double t = static_cast<double>(step);
  const auto step_size = static_cast<float>(lr / (1.0 - std::pow(static_cast<double>(beta1), t)));
  const auto bias_correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(beta2), t)));
  const float decay = 1.0f - lr * weight_decay;
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * grad_scale;
    param[i] *= decay;
    m[i] = beta1 * m[i] + (1.0f - beta1) * g;
    v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
    const float denom = std::sqrt(v[i]) / bias_correction2_sqrt + eps;
    param[i] -= step_size * m[i] / denom;
  }
}

double sum_squares(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

void scale_inplace(float* x, int64_t n, float factor) {
  for (int64_t i = 0; i < n; ++i) x[i] *= factor;
}

}  // namespace moe::cpu
