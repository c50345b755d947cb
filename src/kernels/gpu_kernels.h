// Which kernel runs each op on the GPU. Attention's is decided once per shape and device:
// kernel_choice.h's rules on the device's facts, then cuDNN's own support
// check, which builds the shape's plans and sizes their workspace (so it
// happens when the model is built, before any CUDA graph is captured). A
// shape cuDNN refuses runs the builtin kernel, with cuDNN's reason.
#pragma once

#include <string>
#include <vector>

#include "src/kernels/kernel_choice.h"

namespace moe::kernels {

// For the current CUDA device and the process's settings (kernel_choice.h).
const Choice& attention_choice(const AttentionProblem& p);
// The same for the expert GEMMs of one expert weight; choosing CUTLASS
// builds its kernels' arguments, so the first call must come before any CUDA
// graph is captured (the first micro-batch runs eagerly); a shape CUTLASS
// cannot run goes to the builtin kernel, with the reason.
const Choice& expert_gemm_choice(const ExpertGemmProblem& p);

// Whether the current CUDA device has FP8 GEMMs (cuBLASLt's, compute
// capability 8.9 or newer: Ada, Hopper and later).
bool fp8_gemms_available();

// What runs each op family, one line each, for the start-up log and
// check-gpu: the dense GEMMs' library, then every expert-GEMM and attention
// decision made so far in this process ("attention B=8 T=2048 H=16/8 Dh=128
// bf16: cuDNN 9.19.0 fused SDPA", or the builtin kernel and why).
std::vector<std::string> gpu_kernel_lines();

}  // namespace moe::kernels
