// Error checks for CUDA calls that name the op and its sizes, so a failure
// says what was running, not only the CUDA error string.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace moe::cuda {

inline void check(cudaError_t status, const std::string& what) {
  if (status != cudaSuccess) throw std::runtime_error("CUDA error in " + what + ": " + cudaGetErrorString(status));
}

}  // namespace moe::cuda
