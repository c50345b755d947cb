// The training state as checkpoints see it: every tensor a run needs to
// continue exactly (parameter shards, AdamW moments, router balance biases),
// each with where this rank's piece sits in the global tensor.
#pragma once

#include <string>

#include "src/core/tensor.h"
#include "src/parallel/param_sharding.h"

namespace moe {

struct StateTensor {
  std::string name;      // e.g. "model.layers.1.mlp.up_proj.weight.exp_avg"
  ParamPlacement place;  // global shape, this rank's local block and its flat shard
  Tensor piece;          // fp32; its first place.shard_valid elements are the shard's (the rest is padding);
                         // empty for a tensor of another pipeline stage (listed so checkpoints name the whole model)
  bool written_here;     // one rank writes each piece: replicas of it skip
};

}  // namespace moe
