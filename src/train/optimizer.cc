#include "src/train/optimizer.h"

#include <cmath>

#include "src/kernels/ops.h"

namespace moe {

Optimizer::Optimizer(const OptimizerConfig& cfg, ParamStore& params, TensorPool& pool) : cfg_(cfg), params_(params) {
  for (const Param& p : params.all()) {
    m_.push_back(pool.alloc_shape(p.place.shard_shape()));
    v_.push_back(pool.alloc_shape(p.place.shard_shape()));
  }
}

bool counted_here(const Param& p, const MeshCoord& c) {
  return (p.spec.tp_dim >= 0 || c.tp == 0) && c.dp_replicate == 0 && (p.spec.expert_parallel || c.ep == 0);
}

double Optimizer::grad_norm(Communicator& world) const {
  double sum = 0;
  for (const Param& p : params_.all()) {
    if (counted_here(p, params_.coord())) sum += ops::sum_squares(p.shard_grad);
  }
  return std::sqrt(all_reduce_value(world, sum, ReduceOp::kSum));
}

void Optimizer::step(double lr, double clip_scale, int64_t step) {
  auto& params = params_.all();
  for (size_t i = 0; i < params.size(); ++i) {
    const Param& p = params[i];
    const ops::AdamW hyper{static_cast<float>(lr), static_cast<float>(cfg_.betas[0]), static_cast<float>(cfg_.betas[1]),
                           static_cast<float>(cfg_.eps), p.weight_decay ? static_cast<float>(cfg_.weight_decay) : 0.0f};
    ops::adamw_step(p.shard, p.shard_grad, m_[i], v_[i], hyper, step, static_cast<float>(clip_scale));
  }
  params_.refresh_compute_copies();
}

double clip_scale(double norm, double max_norm) {
  if (!std::isfinite(norm) || norm <= max_norm) return 1.0;
  return max_norm / norm;
}

}  // namespace moe
