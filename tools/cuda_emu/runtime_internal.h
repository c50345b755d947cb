// What the emulated libraries (cuBLASLt, NCCL) share with the runtime.
#pragma once

#include <functional>

#include "tools/cuda_emu/include/cuda_runtime.h"

namespace emu {

// Runs `work` with device memory open, or records it while `stream` is being
// captured. Returns the context's fatal error, if any. `what` names the work
// in error messages.
cudaError_t enqueue(CUstream_st* stream, std::function<void()> work, const char* what);

// The compute capability every emulated device reports (major * 10 + minor):
// CUDA_EMU_COMPUTE_CAPABILITY, 80 (an A100) by default.
int compute_capability();

}  // namespace emu
