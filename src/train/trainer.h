// The training loop of one rank: the mesh (MPI when the layout has several
// ranks), data, this rank's StepRunner, metrics (rank 0 writes them),
// evaluation, checkpoints and preemption. The CUDA backend plugs in below it.
#pragma once

#include <stdexcept>
#include <string>

#include "src/config/derived.h"
#include "src/config/job_config.h"
#include "src/parallel/communicator.h"

namespace moe {

// A run that cannot continue for numerical reasons: a non-finite step under
// train.nan_policy = "abort", or a divergence (divergence.h). The message names
// the newest healthy checkpoint; the command line exits with
// kNumericalFaultExitCode.
struct NumericalFault : std::runtime_error {
  using std::runtime_error::runtime_error;
};
constexpr int kNumericalFaultExitCode = 3;

struct TrainOutcome {
  double last_loss = 0;
  int exit_code = 0;  // 0, or kRequeueExitCode after a preemption checkpoint
};

struct TrainOptions {
  // --init-from-hf: a Hugging Face checkpoint folder to start from (a resumed checkpoint wins).
  std::string init_from_hf;
  // On CUDA, check each rank's GPU before step 1 (src/train/gpu_check.h)
  // unless a passed check is cached; --skip-gpu-check turns it off.
  bool check_gpu = true;
};

// Trains the model the config describes: from a checkpoint
// (checkpoint.load_path, or checkpoint.resume = "auto" and <dir>/latest), else
// from scratch: the initial weights, or those of options.init_from_hf. Saves
// every checkpoint.interval steps, at the end, and on preemption. On CUDA,
// a failed GPU check stops the run before step 1 (a UserError naming the op).
TrainOutcome train(const JobConfig& cfg, const Layout& layout, const TrainOptions& options = {});

// The built-in corpus's folder (train/ and val/ of the Debian fortunes text):
// prepared once, by rank 0 while the other ranks of `world` wait.
std::string built_in_corpus(Communicator& world);

// What train.device = "auto" picks: "cuda" where a GPU is visible, else "cpu".
TrainDevice auto_device();
// Resolves "auto" (auto_device()); for "cuda", refuses a machine where no GPU
// or no CUDA library can be used.
void resolve_device(TrainConfig& t);

}  // namespace moe
