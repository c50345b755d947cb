// One MoE layer's statistics of an optimizer step: what the metrics report,
// what the sigmoid router's bias learns from and what moe_gradient_scale
// scales by. Read from the device counters (moe_step_counters.h) once per step
// and summed over the data-parallel ranks by the trainer.
#pragma once

#include <cstdint>
#include <vector>

namespace moe {

// Accumulated over the micro-batches of one optimizer step.
struct MoEStepStats {
  std::vector<int64_t> routed_per_expert;  // pairs that chose each expert, before capacity (kept, when experts choose)
  std::vector<int64_t> kept_per_expert;    // pairs each expert computed
  int64_t pairs = 0;
  int64_t dropped = 0;
  double load_balance = 0;  // summed over micro-batches (unweighted)
  double z_loss = 0;
  double sequence_balance = 0;
  int64_t micro_batches = 0;
};

// The mean of per-expert counts (the balance target of the bias update and
// of moe_gradient_scale).
inline double mean_load(const std::vector<int64_t>& per_expert) {
  double sum = 0;
  for (int64_t c : per_expert) sum += static_cast<double>(c);
  return per_expert.empty() ? 0.0 : sum / static_cast<double>(per_expert.size());
}

}  // namespace moe
