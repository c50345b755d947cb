// The cuDNN attention of a build without its path (CPU-only; the CUDA
// emulator, which runs the project's own kernels; a toolkit without cuDNN's
// headers): in_build() says so, and
// the kernel choice (src/kernels/kernel_choice.h) then never calls the rest.
#include "src/kernels/cuda/cudnn_attention.h"

namespace moe::cuda::cudnn_attention {
namespace {

[[noreturn]] void absent(const char* what) {
  throw std::logic_error(std::string(what) + ": this build has no cuDNN attention path");
}

}  // namespace

bool in_build() { return false; }

int64_t loaded_version() { return 0; }

int64_t prepare(const kernels::AttentionProblem&, bool) { throw Refused("this build has no cuDNN attention path"); }

void forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool) {
  absent("attention_forward (cuDNN)");
}

void backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
              const Tensor&, const Tensor&, bool) {
  absent("attention_backward (cuDNN)");
}

}  // namespace moe::cuda::cudnn_attention
