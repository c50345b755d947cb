// A passed GPU check, remembered so that a CUDA run checks a GPU once, not at
// every start: one file per (this binary, GPU model, driver, CUDA runtime) in
// <cache_dir>/gpu_check/ (src/core/cache_dir.h). "This binary" is its commit,
// size and modification time, so a rebuild checks again.
#pragma once

#include <map>
#include <string>

#include "src/train/gpu_check.h"

namespace moe {

// The file that records a passed check of CUDA device `device`.
std::string gpu_check_cache_path(int device);
// Whether that file exists.
bool gpu_check_passed_before(int device);
// The vendor kernels that check replaced by builtin ones (GpuCheckReport::
// fallbacks): family and what failed. Empty when there were none, or no file.
std::map<std::string, std::string> remembered_fallbacks(int device);
// Writes the file for a passed report (atomically). A cache that cannot be
// written costs only a check at the next start: that is a warning, not an error.
void remember_gpu_check(const GpuCheckReport& report);

}  // namespace moe
