// AdamW over this rank's parameter shards (ParamStore: shard, shard_grad),
// with fp32 master weights and moments, decoupled weight decay on matrices
// only, and global-norm gradient clipping. Both run as fused multi-tensor ops
// over every shard at once (ops::sum_squares_many, ops::adamw_step_many): on
// the GPU one launch each, and one host sync for the norm, not one per tensor.
#pragma once

#include <vector>

#include "src/config/job_config.h"
#include "src/core/tensor_pool.h"
#include "src/kernels/ops.h"
#include "src/model/params.h"
#include "src/parallel/communicator.h"

namespace moe {

class Optimizer {
 public:
  Optimizer(const OptimizerConfig& cfg, ParamStore& params, TensorPool& pool);

  // The L2 norm of all gradients together, each parameter element counted
  // once whatever its sharding: every rank adds the squares of the shards it
  // counts (counted_here), then `world` sums them.
  double grad_norm(Communicator& world) const;
  // One AdamW step at learning rate `lr`; gradients are multiplied by
  // clip_scale first (min(1, max_norm / norm) for clipping). step is 1-based.
  void step(double lr, double clip_scale, int64_t step);

  // AdamW's first and second moments of parameter i (shard-shaped), for checkpoints.
  const Tensor& exp_avg(size_t i) const { return m_.at(i); }
  const Tensor& exp_avg_sq(size_t i) const { return v_.at(i); }

 private:
  OptimizerConfig cfg_;
  ParamStore& params_;
  std::vector<Tensor> m_, v_;
  // Built once: the shards and their views never move, so the fused ops see
  // the same lists every step (on the GPU: no table upload after the first).
  std::vector<ops::AdamWSlot> slots_;  // one per parameter, in ParamStore order
  std::vector<Tensor> counted_grads_;  // shard_grad of the parameters counted_here, in that order
};

// min(1, max_norm / norm); 1 when the norm is not finite (the caller decides what to do).
double clip_scale(double norm, double max_norm);

// Whether this rank counts p's shard in global sums: a replica (tp for a
// parameter replicated across tp, dp_replicate, ep for a non-expert one) counts
// only at coordinate 0.
bool counted_here(const Param& p, const MeshCoord& c);

}  // namespace moe
