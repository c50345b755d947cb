#include "src/model/shared_scratch.h"

#include <stdexcept>
#include <string>
#include <vector>

namespace moe {

const char* scratch_role_name(ScratchRole role) {
  switch (role) {
    case ScratchRole::kBlockAttnOut: return "block.attn_out";
    case ScratchRole::kBlockFfnOut: return "block.ffn_out";
    case ScratchRole::kBlockDln: return "block.dln";
    case ScratchRole::kBlockDh: return "block.dh";
    case ScratchRole::kAttentionDq: return "attention.dq";
    case ScratchRole::kAttentionDatt: return "attention.datt";
    case ScratchRole::kAttentionDk: return "attention.dk";
    case ScratchRole::kAttentionDv: return "attention.dv";
    case ScratchRole::kMlpDa: return "mlp.da";
    case ScratchRole::kMlpDb: return "mlp.db";
    case ScratchRole::kMlpDg: return "mlp.dg";
    case ScratchRole::kRoutedExpertsDa: return "routed_experts.da";
    case ScratchRole::kRoutedExpertsDb: return "routed_experts.db";
    case ScratchRole::kRoutedExpertsDg: return "routed_experts.dg";
    case ScratchRole::kSharedExpertsDa: return "shared_experts.da";
    case ScratchRole::kSharedExpertsDb: return "shared_experts.db";
    case ScratchRole::kSharedExpertsDg: return "shared_experts.dg";
    case ScratchRole::kMoeExY: return "moe.ex_y";
    case ScratchRole::kMoeExDx: return "moe.ex_dx";
    case ScratchRole::kMoeExDy: return "moe.ex_dy";
    case ScratchRole::kMoeExPeerIds: return "moe.ex_peer_ids";
    case ScratchRole::kMoeDxs: return "moe.dxs";
    case ScratchRole::kMoeDys: return "moe.dys";
    case ScratchRole::kMoeDtopkW: return "moe.dtopk_w";
    case ScratchRole::kMoeSharedOut: return "moe.shared_out";
    case ScratchRole::kMoeDlogits: return "moe.dlogits";
    case ScratchRole::kMoeDlogitsAct: return "moe.dlogits_act";
    case ScratchRole::kMoeRouterInput: return "moe.router_input";
    case ScratchRole::kMoeRouterDx: return "moe.router_dx";
    case ScratchRole::kMoeDnoiseLogits: return "moe.dnoise_logits";
    case ScratchRole::kMoeDnoiseLogitsAct: return "moe.dnoise_logits_act";
  }
  return "unknown scratch role";
}

Tensor SharedScratch::get(ScratchRole role, std::initializer_list<int64_t> shape, DType dtype) {
  auto it = buffers_.find(role);
  if (it == buffers_.end()) return buffers_[role] = pool_.alloc(shape, dtype);
  const Tensor& t = it->second;
  const std::vector<int64_t> want(shape);
  if (t.dtype != dtype || std::vector<int64_t>(t.shape.begin(), t.shape.begin() + t.ndim) != want) {
    throw std::logic_error(std::string("SharedScratch: role ") + scratch_role_name(role) + " is " + t.shape_string() +
                           " " + dtype_name(t.dtype) + ", asked for " + shape_text(want) + " " + dtype_name(dtype));
  }
  return t;
}

}  // namespace moe
