#include "src/train/moe_gradient_scale.h"

#include <algorithm>
#include <string>

#include "src/kernels/ops.h"
#include "src/model/param_names.h"

namespace moe {

void scale_expert_gradients(ParamStore& params, int64_t layer, const MoEStepStats& step) {
  const double mean = mean_load(step.kept_per_expert);
  Param* experts[3] = {&params[param_name::routed_experts(layer, "w1")],
                       &params[param_name::routed_experts(layer, "w3")],
                       &params[param_name::routed_experts(layer, "w2")]};
  // The placement is the same for the three. This rank's shard holds elements
  // [shard_begin, shard_begin + shard_valid) of its local experts, flattened;
  // local expert r (global expert local_offset[0] + r) is elements
  // [r * per_expert, (r + 1) * per_expert).
  const ParamPlacement& place = experts[0]->place;
  const int64_t local_experts = place.local_shape[0];
  const int64_t per_expert = place.local_numel() / local_experts;
  const int64_t begin = place.shard_begin, end = place.shard_begin + place.shard_valid;
  for (int64_t r = 0; r < local_experts; ++r) {
    const int64_t lo = std::max(begin, r * per_expert), hi = std::min(end, (r + 1) * per_expert);
    if (lo >= hi) continue;
    const int64_t e = place.local_offset[0] + r;
    const auto load = static_cast<double>(step.kept_per_expert[static_cast<size_t>(e)]);
    const float factor = static_cast<float>(load > 0 ? std::clamp(mean / load, 0.1, 10.0) : 10.0);
    for (Param* p : experts) {
      const Tensor flat = p->shard_grad.reshaped({p->shard_grad.numel()});
      ops::scale_inplace(flat.rows(lo - begin, hi - lo), factor);
    }
  }
}

}  // namespace moe
