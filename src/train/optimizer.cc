#include "src/train/optimizer.h"

#include <cmath>

#include "src/kernels/ops.h"

namespace moe {

Optimizer::Optimizer(const OptimizerConfig& cfg, ParamStore& params, TensorPool& pool) : cfg_(cfg), params_(params) {
  for (const Param& p : params.all()) {
    m_.push_back(pool.alloc_shape(p.spec.shape));
    v_.push_back(pool.alloc_shape(p.spec.shape));
  }
}

double Optimizer::grad_norm() const {
  double sum = 0;
  for (const Param& p : params_.all()) sum += ops::sum_squares(p.grad);
  return std::sqrt(sum);
}

void Optimizer::step(double lr, double clip_scale, int64_t step) {
  auto& params = params_.all();
  for (size_t i = 0; i < params.size(); ++i) {
    const Param& p = params[i];
    const ops::AdamW hyper{static_cast<float>(lr), static_cast<float>(cfg_.betas[0]), static_cast<float>(cfg_.betas[1]),
                           static_cast<float>(cfg_.eps), p.weight_decay ? static_cast<float>(cfg_.weight_decay) : 0.0f};
    ops::adamw_step(p.value, p.grad, m_[i], v_[i], hyper, step, static_cast<float>(clip_scale));
  }
}

double clip_scale(double norm, double max_norm) {
  if (!std::isfinite(norm) || norm <= max_norm) return 1.0;
  return max_norm / norm;
}

}  // namespace moe
