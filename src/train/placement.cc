#include "src/train/placement.h"

namespace moe {

Placement placement_of(const TrainConfig& t) {
  Placement p;
  if (t.device == "cuda") {
    p.device = Device::kCuda;
    p.compute = t.mixed_precision == "bf16" ? DType::kBF16 : DType::kF32;
  }
  return p;
}

kernels::KernelSettings kernel_settings_of(const TrainConfig& t) {
  return {kernels::parse_kernel_source(t.kernels), t.deterministic};
}

}  // namespace moe
