// One parameter tensor of a fused AdamW step (ops::adamw_step_many). Its own
// header because both ops.h and the CUDA backend's signature (cuda_ops.h)
// name it, and cuda_ops.h must not include ops.h.
#pragma once

#include "src/core/tensor.h"

namespace moe::ops {

struct AdamWSlot {
  Tensor param;  // F32 master weights, updated in place
  Tensor grad;   // F32, same numel; read only
  Tensor m, v;   // F32 first and second moments, same numel, updated in place
  // Decoupled weight decay of this tensor: AdamW decays matrices only, so the
  // caller gives 0 for norms and other vectors.
  float weight_decay = 0.0f;
  // Optional BF16 copy of param (same numel), WRITTEN with the updated values
  // rounded to nearest even: the compute copy under mixed precision, refreshed
  // in the same pass instead of a second read of the masters.
  Tensor compute = {};
};

}  // namespace moe::ops
