#include "src/train/placement.h"

namespace moe {

Placement placement_of(const TrainConfig& t) {
  Placement p;
  if (t.device == TrainDevice::kCuda) {
    p.device = Device::kCuda;
    // fp8: bf16 activations and weight copies; the dense GEMMs quantise their operands.
    p.compute = t.mixed_precision == Precision::kFp32 ? DType::kF32 : DType::kBF16;
  }
  return p;
}

kernels::KernelSettings kernel_settings_of(const TrainConfig& t) {
  const kernels::KernelSource source =
      t.kernels == TrainKernels::kBuiltin ? kernels::KernelSource::kBuiltin : kernels::KernelSource::kAuto;
  return {source, t.deterministic};
}

}  // namespace moe
