// Which GPUs this process can use. Any CUDA error (no driver, no device, a
// build without CUDA) counts as "no GPU": `train.device = "auto"` then runs on CPU.
#pragma once

#include <string>

namespace moe {

int cuda_device_count();
// "NVIDIA H100 80GB HBM3, 79.1 GiB, sm_90" for device i (empty without one).
std::string cuda_device_description(int device);

}  // namespace moe
