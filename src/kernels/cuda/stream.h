// The stream every kernel of the CUDA backend runs on (src/core/cuda_stream.h,
// shared with TensorPool's fills and copies), and the cuBLASLt handle and
// workspace the GEMMs share. One of each per process (one rank drives one
// GPU); created on first use, on the current device.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>

#include "src/core/cuda_stream.h"

namespace moe::cuda {

cublasLtHandle_t cublaslt();
// A device workspace for cuBLASLt (32 MiB, what Hopper's fastest kernels ask for).
void* cublaslt_workspace();
size_t cublaslt_workspace_bytes();

}  // namespace moe::cuda
