// The training loop of one rank: the mesh (MPI when the layout has several
// ranks), data, this rank's StepRunner, metrics (rank 0 writes them),
// evaluation, checkpoints and preemption. The CUDA backend plugs in below it.
#pragma once

#include <string>

#include "src/config/derived.h"
#include "src/config/job_config.h"

namespace moe {

struct TrainOutcome {
  double last_loss = 0;
  int exit_code = 0;  // 0, or kRequeueExitCode after a preemption checkpoint
};

// Trains the model the config describes: from a checkpoint
// (checkpoint.load_path, or checkpoint.resume = "auto" and <dir>/latest), else
// from scratch: the initial weights, or those of the Hugging Face checkpoint
// folder `init_from_hf` when it is given (--init-from-hf; a resumed
// checkpoint wins over it). Saves every checkpoint.interval steps, at the
// end, and on preemption.
TrainOutcome train(const JobConfig& cfg, const Layout& layout, const std::string& init_from_hf = "");

}  // namespace moe
