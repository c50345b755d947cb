// `moe_train check-gpu` and the check a CUDA run makes before its first step:
// the binary verifies itself on the GPU it meets, since no GPU needs to be
// present to build or test it. On one GPU:
//   - every op against the CPU reference (src/kernels/op_check.h), at small
//     shapes and at the config's layer shapes, with fp32 and bf16 activations;
//   - a training micro-batch replayed as a CUDA graph against the eager one,
//     bit for bit;
//   - 5 training steps of the config's model, shrunk (same structure: dense
//     and MoE blocks, router, top-k, GQA ratio; small dims), against the CPU,
//     in fp32 and in bf16, with the training tests' tolerances.
// An op family whose vendor kernel (cuDNN's attention) fails its rows is
// switched to the builtin kernel for the process (src/kernels/kernel_choice.h)
// and checked again: the check passes with a warning if the builtin kernel
// does. A whole-model row (graph replay, training) that fails while vendor
// kernels run is run again with them switched off, family by family, until it
// passes; the families that had to go are replaced the same way. A passed check is cached (gpu_check_cache.h) for this
// build, GPU model, driver and CUDA runtime, with its fallbacks.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "src/config/job_config.h"
#include "src/data/batch_sampler.h"
#include "src/kernels/op_check.h"

namespace moe {

using GpuCheckRow = op_check::Result;

struct GpuCheckReport {
  int device = 0;
  std::string gpu;  // "NVIDIA H100 80GB HBM3, 79.1 GiB, sm_90"
  std::vector<GpuCheckRow> rows;
  // Vendor kernels replaced by the builtin ones, by family: what failed.
  std::map<std::string, std::string> fallbacks;
  double seconds = 0;

  bool passed() const;
  // The first failed row, or null.
  const GpuCheckRow* first_failure() const;
};

// Runs every check on CUDA device `device` (selecting it), for `cfg`'s shapes.
GpuCheckReport check_gpu(const JobConfig& cfg, int device);

// The op families whose vendor kernel failed a row, each with its first
// failure ("attention_backward q [2, 32, 4, 16] bf16: dq[3] = 0.5, the CPU
// gives 0.25"). Rows of builtin kernels never count: their failure is the GPU's
// or this build's, and fails the check.
std::map<std::string, std::string> vendor_failures(const std::vector<GpuCheckRow>& rows);

// A whole-model row, `failed`, failed while the vendor kernels of `families_on`
// ran. rerun(off) runs it again with the families `off` switched to the
// builtin kernels; they are switched off one more at a time, in the order
// given, until the row passes. Returns the rerun rows, the last of which
// passed when `replaced` (set to the families that were switched off) is not
// empty; empty `replaced`: the builtin kernels fail it too, or no vendor
// kernel ran, and `failed` stands.
std::vector<GpuCheckRow> rerun_without_vendors(const std::vector<std::string>& families_on,
                                               const std::function<GpuCheckRow(const std::vector<std::string>&)>& rerun,
                                               std::vector<std::string>& replaced);

// 6 steps of `cfg`'s model on the current GPU in bf16, one micro-batch each:
// the loss and the gradient norm of each, in order. With `graph`, the first
// micro-batch runs eagerly, the second is captured as a CUDA graph and the
// rest replay it; the check holds the two runs equal, bit for bit.
std::vector<double> micro_batch_losses(const JobConfig& cfg, const BatchSampler& sampler, bool graph);

// The config's model, shrunk for the check's training comparison: the same
// structure at dim 4 x 32, 2 x 64 tokens, a byte-level vocabulary, one process.
JobConfig shrink_for_check(const JobConfig& cfg);

// The table: op, shape, dtype, max error, tolerance, time, PASS/FAIL.
std::string format_gpu_check(const GpuCheckReport& report);
// "GPU 0 (NVIDIA H100 ...): 78 checks passed in 41.2 s", or the first failure:
// "GPU 0 (...): FAILED rmsnorm_forward [128, 64] bf16: out[3] = ..., the CPU gives ...".
std::string gpu_check_summary(const GpuCheckReport& report);

}  // namespace moe
