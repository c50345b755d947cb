// The training loop on one process: data, model, AdamW, schedule, metrics,
// evaluation. Multi-rank layouts and the CUDA backend plug in below it.
#pragma once

#include "src/config/derived.h"
#include "src/config/job_config.h"

namespace moe {

// Trains the model the config describes; returns the last logged training loss.
double train(const JobConfig& cfg, const Layout& layout);

}  // namespace moe
