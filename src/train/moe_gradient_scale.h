// moe_gradient_scale: after the gradients are reduced, expert e's weight
// gradients of an MoE block are multiplied by clamp(mean_load / load_e, 0.1,
// 10), loads = the rows each expert computed over the step (summed over the
// data-parallel ranks), so rarely chosen experts still learn. It scales this
// rank's shard of each of its experts' w1, w3 and w2 gradients.
#pragma once

#include <cstdint>

#include "src/model/moe/moe_step_stats.h"
#include "src/model/params.h"

namespace moe {

// The routed experts of MoE block `layer`.
void scale_expert_gradients(ParamStore& params, int64_t layer, const MoEStepStats& step);

}  // namespace moe
