// The CUTLASS expert GEMMs of a build without them (CPU-only, or the CUDA
// emulator, which runs the project's own kernels): in_build() says so, and
// the kernel choice (src/kernels/kernel_choice.h) then never calls the rest.
#include <stdexcept>
#include <string>

#include "src/kernels/cuda/cutlass_grouped_gemm.h"

namespace moe::cuda::cutlass_grouped {
namespace {

[[noreturn]] void absent(const char* what) {
  throw std::logic_error(std::string(what) + ": this build has no CUTLASS grouped GEMM");
}

}  // namespace

bool in_build() { return false; }

void prepare(int64_t, int64_t, int64_t) { absent("CUTLASS grouped GEMM"); }

void forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&) { absent("grouped_matmul_forward (CUTLASS)"); }

void backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
  absent("grouped_matmul_backward (CUTLASS)");
}

}  // namespace moe::cuda::cutlass_grouped
