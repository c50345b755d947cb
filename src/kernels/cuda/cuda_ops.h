// The CUDA backend: the ops of src/kernels/ops.h for device tensors, with the
// same names and arguments. ops.cc dispatches here when the tensors live on
// the GPU. Conventions, for every kernel:
// - Tensors are device memory (Tensor::device == Device::kCuda). Activations
//   and their gradients may be BF16 or F32; every reduction and GEMM
//   accumulates in fp32. Router logits, scores and weights are F32 (router
//   math is fp32 whatever the training precision). Master weights, their
//   gradients and AdamW moments are F32. Token ids and routing indices are I32.
// - Kernels run on stream() (stream.h) and do not synchronise; a function that
//   must read a device value on the host says so in its comment.
// - Errors (launch failures, unsupported dtypes or shapes) throw, naming the
//   op and the shapes (cuda_check.h).
// Available when MOE_TRAIN_HAS_CUDA is 1.
#pragma once

#include "src/core/tensor.h"

namespace moe::cuda {

// Each op family adds its declarations below, next to its .cu file's name.

}  // namespace moe::cuda
