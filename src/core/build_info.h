// What this binary is: its version, the commit it was built from, and the CUDA
// libraries it was built with and finds at run time. `moe_train --version`
// prints it, every run logs it at the start, and every checkpoint's
// metadata.json records it, so a result can always be traced to its build.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace moe {

// "0.2.0"
const char* moe_train_version();
// The git commit (40 hex digits, "+dirty" when built with uncommitted changes),
// or "unknown" outside a git checkout.
const char* build_commit();

// Named facts about the build, in a fixed order: version, commit, and for CUDA
// builds the versions it was built with ("cuda_built", "cublas_built",
// "nccl_built") and found at run time ("cuda_driver", "cuda_runtime",
// "cublas_found", "nccl_found"; "none" when absent). CPU-only builds say
// "cuda_built": "none".
std::vector<std::pair<std::string, std::string>> build_facts();

// The text of `moe_train --version` (several lines).
std::string version_text();
// One line for a run's log.
std::string version_line();

}  // namespace moe
