// Causal attention with grouped KV heads through cuDNN's fused SDPA (flash
// attention tuned by NVIDIA for each GPU), forward and backward, bf16, with
// the semantics of cuda_ops.h's attention_forward/backward: the same tensor
// layouts (q, out [B, T, H, Dh]; k, v [B, T, G, Dh], read in place through
// strides, K and V never repeated per query head) and lse [B, H, T] as cuDNN's
// softmax statistics (the natural log-sum-exp of the scaled scores, as the
// CPU reference's). The backward WRITES dq, dk and dv.
//
// Each shape's two execution plans are built once (prepare) and cached; their
// workspace is a device buffer sized then, so CUDA graphs capture its final
// address. A build without the cuDNN path (CPU-only, emulator) links
// cudnn_attention_absent.cc, whose in_build() is false.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "src/core/tensor.h"
#include "src/kernels/kernel_choice.h"

namespace moe::cuda::cudnn_attention {

// Whether this build has the cuDNN path.
bool in_build();
// The loaded cuDNN's version number (91900 for 9.19.0), or 0 when
// libcudnn.so.9 cannot be loaded (or the build has no cuDNN path).
int64_t loaded_version();

// cuDNN refused a shape (its support check or plan build failed): the message
// says why, and the caller runs the builtin kernel.
struct Refused : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Builds (once) and caches the forward and backward plans of `p` on the
// current device, and sizes the shared workspace for them. Returns the
// workspace bytes the two plans need. Throws Refused.
int64_t prepare(const kernels::AttentionProblem& p, bool deterministic);

// Run a prepared shape on the backend's stream (stream.h).
void forward(const Tensor& out, const Tensor& lse_BHT, const Tensor& q, const Tensor& k, const Tensor& v,
             bool deterministic);
void backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout, const Tensor& q,
              const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse_BHT, bool deterministic);

}  // namespace moe::cuda::cudnn_attention
