// Logging: one prefix format for every message, `[time] [rank R] [level] text`.
// Only rank 0 prints info-level messages unless all ranks are asked to.
#pragma once

#include <spdlog/spdlog.h>

namespace moe {

// Call once, as soon as the rank is known (before that, rank 0 is assumed).
void init_logging(int rank, bool all_ranks_verbose = false);

}  // namespace moe
