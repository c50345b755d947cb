// The step's MoE statistics, in one place: every layer's counts and aux sums
// summed over the data-parallel ranks, then turned into the logged metrics
// (model-wide and per layer).
#pragma once

#include <cstdint>
#include <vector>

#include "src/model/moe/moe_layer.h"
#include "src/parallel/communicator.h"
#include "src/train/metrics.h"

namespace moe {

// Each layer's statistics summed over `dp` (counts exactly, aux sums in fp32),
// in one integer and one float all-reduce for all layers. The same on every rank.
std::vector<MoEStepStats> sum_over_ranks(Communicator& dp, std::vector<MoEStepStats> stats);

// Fills the MoE part of `m` from the step's summed statistics; `block_index[i]`
// is the model block of stats[i] (the "layer" of moe/layer_<i>/...).
void add_moe_metrics(StepMetrics& m, const std::vector<MoEStepStats>& stats, const std::vector<int64_t>& block_index);

}  // namespace moe
