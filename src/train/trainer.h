// The training loop of one rank: the mesh (MPI when the layout has several
// ranks), data, this rank's StepRunner, metrics (rank 0 writes them),
// evaluation. The CUDA backend plugs in below it.
#pragma once

#include "src/config/derived.h"
#include "src/config/job_config.h"

namespace moe {

// Trains the model the config describes; returns the last logged training loss.
double train(const JobConfig& cfg, const Layout& layout);

}  // namespace moe
