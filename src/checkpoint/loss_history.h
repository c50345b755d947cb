// The healthy losses of a run so far, as a running mean (the mean of all of
// them, then an exponential average over about 100 steps). Checkpoints carry
// it, so that a resumed run judges loss spikes as the uninterrupted run would
// (train/divergence.h judges them).
#pragma once

#include <cstdint>

namespace moe {

struct LossHistory {
  double mean = 0;
  int64_t count = 0;
};

}  // namespace moe
