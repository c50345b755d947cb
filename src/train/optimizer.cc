#include "src/train/optimizer.h"

#include <cmath>

#include "src/kernels/ops.h"

namespace moe {

Optimizer::Optimizer(const OptimizerConfig& cfg, ParamStore& params, TensorPool& pool) : cfg_(cfg), params_(params) {
  for (const Param& p : params.all()) {
    m_.push_back(pool.alloc_shape(p.place.shard_shape()));
    v_.push_back(pool.alloc_shape(p.place.shard_shape()));
    const float weight_decay = p.weight_decay ? static_cast<float>(cfg_.weight_decay) : 0.0f;
    // Under mixed precision AdamW also writes the bf16 compute copy of the shard.
    const Tensor copy = p.shard_compute.data != p.shard.data ? p.shard_compute : Tensor{};
    slots_.push_back({p.shard, p.shard_grad, m_.back(), v_.back(), weight_decay, copy});
    if (counted_here(p, params.coord())) counted_grads_.push_back(p.shard_grad);
  }
}

bool counted_here(const Param& p, const MeshCoord& c) {
  return (p.spec.tp_dim >= 0 || c.tp == 0) && c.dp_replicate == 0 && (p.spec.expert_parallel || c.ep == 0);
}

double Optimizer::grad_norm(Communicator& world) const {
  // On the CPU the same sum, in the same order, as adding sum_squares per shard.
  const double sum = ops::sum_squares_many(counted_grads_);
  return std::sqrt(all_reduce_value(world, sum, ReduceOp::kSum));
}

void Optimizer::step(double lr, double clip_scale, int64_t step) {
  const ops::AdamWShared hyper{static_cast<float>(lr), static_cast<float>(cfg_.betas[0]),
                               static_cast<float>(cfg_.betas[1]), static_cast<float>(cfg_.eps)};
  ops::adamw_step_many(slots_, hyper, step, static_cast<float>(clip_scale));  // compute copies included
}

double clip_scale(double norm, double max_norm) {
  if (!std::isfinite(norm) || norm <= max_norm) return 1.0;
  return max_norm / norm;
}

}  // namespace moe
