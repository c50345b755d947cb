// `moe_train eval`: the loss and perplexity of a checkpoint on the validation
// data, under any layout (the weights are resharded on load, as for resume).
#pragma once

#include <cstdint>
#include <string>

#include "src/config/derived.h"
#include "src/config/job_config.h"

namespace moe {

struct EvalResult {
  std::string checkpoint;  // the step folder evaluated
  int64_t step = 0;        // its training step
  double loss = 0;         // mean LM cross-entropy over the batches
  int64_t batches = 0;     // global batches (eval.steps)
  int64_t tokens = 0;      // tokens scored in all
  std::string data;        // the validation data read
};

// `checkpoint`: a step folder or a checkpoint folder (its `latest`); empty:
// checkpoint.load_path, else the latest checkpoint in checkpoint.dir. The data:
// eval.dataset_path, else the built-in corpus's validation split when the run
// trains on the built-in corpus. A missing checkpoint or data is a UserError.
EvalResult evaluate_checkpoint(const JobConfig& cfg, const Layout& layout, const std::string& checkpoint);

}  // namespace moe
