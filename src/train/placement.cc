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

}  // namespace moe
