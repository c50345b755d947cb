// Helpers built on any Communicator backend.
#include "src/parallel/communicator.h"

namespace moe {

double all_reduce_value(Communicator& group, double value, ReduceOp op) {
  if (group.size() == 1) return value;
  float wire = static_cast<float>(value);
  group.all_reduce(view_of(&wire, {1}), op);
  return wire;
}

bool any_rank(Communicator& group, bool flag) {
  int32_t wire = flag ? 1 : 0;
  if (group.size() > 1) group.all_reduce(view_of(&wire, {1}, DType::kI32), ReduceOp::kMax);
  return wire != 0;
}

}  // namespace moe
