#include <cstdint>
#include <string>

#include "src/kernels/cuda/cuda_check.h"
#include "src/kernels/cuda/stream.h"

namespace moe::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

struct Context {
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;

  Context() {
    if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("cublasLtCreate failed");
    check(cudaMalloc(&workspace, kWorkspaceBytes), "cudaMalloc (cuBLASLt workspace, 32 MiB)");
  }
};

Context& context() {
  static Context c;  // process lifetime: freed by the driver at exit
  return c;
}

}  // namespace

cublasLtHandle_t cublaslt() { return context().lt; }
void* cublaslt_workspace() { return context().workspace; }
size_t cublaslt_workspace_bytes() { return kWorkspaceBytes; }

}  // namespace moe::cuda
