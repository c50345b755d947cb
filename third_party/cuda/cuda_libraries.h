// cuBLASLt, NCCL and cuDNN, opened at run time (dlopen) instead of linked, so that
// the binary starts, and trains on the CPU, where they are absent: a login
// node, a laptop. cudart is linked statically and opens the driver itself.
// cuda_libraries.cc defines the functions moe_train calls; each forwards to
// the library, which is opened on the first call. Looked for in
// $CUDA_HOME/lib64 and $CUDA_HOME/lib (NCCL also in $NCCL_HOME/lib), then by
// the loader (LD_LIBRARY_PATH, the ldconfig cache), then in the toolkit the
// binary was built with.
#pragma once

#include <cstdint>
#include <string>

namespace moe::cuda_libraries {

// Opens both libraries (once). Returns "" when they are there, else one line
// naming what is missing, where it was looked for, and the fix.
std::string load();
// Where a library was found ("" when not loaded): for --version.
std::string cublaslt_path();
std::string nccl_path();
// cuDNN 9 (libcudnn.so.9), looked for the same way but only when asked:
// only the attention of bf16 GPU runs needs it, and it is optional there (the
// builtin kernel runs without it). "9.19.0 (/path/libcudnn.so.9)", or "none".
std::string cudnn_found();
// Its version number (91900 for 9.19.0), or 0 when it cannot be loaded.
int64_t cudnn_version();

}  // namespace moe::cuda_libraries
