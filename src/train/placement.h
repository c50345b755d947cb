// Where a run computes and in which dtype (train.device, train.mixed_precision):
// the CPU always computes in fp32 (its reference kernels are fp32); a GPU
// computes in bf16 with fp32 masters (also under "fp8", whose dense GEMMs
// quantise their bf16 operands), or in fp32 for checking.
#pragma once

#include "src/config/job_config.h"
#include "src/core/tensor.h"
#include "src/kernels/kernel_choice.h"

namespace moe {

struct Placement {
  Device device = Device::kCpu;
  DType compute = DType::kF32;
  int gpu = -1;  // the CUDA device this rank selected (given: that one; -1: by local rank)
};

Placement placement_of(const TrainConfig& t);

// Which kernels a GPU run may take (train.kernels, train.deterministic), as
// the kernel choice reads them (src/kernels/kernel_choice.h).
kernels::KernelSettings kernel_settings_of(const TrainConfig& t);

}  // namespace moe
