// The learning-rate schedule of [scheduler], as a factor of optimizer.lr for
// optimizer step `step` (1-based):
// - warm-up: step / warmup_steps while step <= warmup_steps (linear from 0 to 1);
// - then, with p = progress through decay_steps (default: the steps left after
//   warm-up), clamped to [0, 1] and min = min_lr_ratio:
//   cosine    min + 0.5 (1 - min)(1 + cos(pi p))
//   linear    1 - (1 - min) p
//   wsd       1 for stable_steps, then the cosine shape over decay_steps
//             (defaults: decay_steps = 10% of the post-warm-up steps,
//             stable_steps = the rest)
//   constant  1
#pragma once

#include <cstdint>

#include "src/config/job_config.h"

namespace moe {

double lr_factor(const SchedulerConfig& s, int64_t max_steps, int64_t step);

// The sigmoid router's bias step for optimizer step `step`: moe_bias_update_rate
// shaped by moe_bias_schedule (constant; cosine_decay: rate 0.5 (1 + cos(pi step/max_steps));
// linear_warmup: rate min(1, 10 step / max_steps)).
double bias_update_rate(const ModelConfig& m, int64_t max_steps, int64_t step);

}  // namespace moe
