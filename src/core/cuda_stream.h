// The one CUDA stream a rank's work runs on: every kernel, memset and copy of
// the CUDA backend, so that they are ordered without device-wide syncs.
// Created on first use on the current device (the trainer selects the device
// by local rank first). Only with MOE_TRAIN_HAS_CUDA.
#pragma once

#include <cuda_runtime.h>

namespace moe::cuda {

cudaStream_t stream();

}  // namespace moe::cuda
