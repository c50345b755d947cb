// Buffers a layer needs only while its own forward or backward runs: the
// backward's gradient scratch (dq, dln, da, dxs, ...) and forward temporaries
// (a block's attention and FFN outputs before they join the residual). Layers
// run one at a time, so one buffer per role serves every layer: this is most
// of what the activations would otherwise cost (about half, for the 1B
// benchmark model). What a layer saves for its backward stays its own.
// A role always has one shape; asking again with another is a bug (logic_error).
#pragma once

#include <initializer_list>
#include <map>

#include "src/core/tensor_pool.h"

namespace moe {

// Every buffer SharedScratch holds, one per role whatever the layer.
enum class ScratchRole {
  // Block: its sublayers' outputs before the residual, and their gradients.
  kBlockAttnOut,
  kBlockFfnOut,
  kBlockDln,
  kBlockDh,
  // Attention's backward.
  kAttentionDq,
  kAttentionDatt,
  kAttentionDk,
  kAttentionDv,
  // The SwiGLU FFNs' backward: the dense MLP, the routed experts, the shared experts.
  kMlpDa,
  kMlpDb,
  kMlpDg,
  kRoutedExpertsDa,
  kRoutedExpertsDb,
  kRoutedExpertsDg,
  kSharedExpertsDa,
  kSharedExpertsDb,
  kSharedExpertsDg,
  // The MoE layer: the expert-parallel exchange, the permuted tokens'
  // gradients, the routing weights' gradient, the shared experts' output,
  // the router's logits' gradient (fp32, and in the activation dtype for its GEMM).
  kMoeExY,
  kMoeExDx,
  kMoeExDy,
  kMoeExPeerIds,  // expert dropout's row ids as received (I32), before their expert-major gather
  kMoeDxs,
  kMoeDys,
  kMoeDtopkW,
  kMoeSharedOut,
  kMoeDlogits,
  kMoeDlogitsAct,
  // The router's jittered input and its gradient before the jitter (moe_router_jitter).
  kMoeRouterInput,
  kMoeRouterDx,
  // noisy_topk: the gradient of its noise logits (fp32, and in the activation dtype for its GEMM).
  kMoeDnoiseLogits,
  kMoeDnoiseLogitsAct,
};

// "attention.dq", for messages.
const char* scratch_role_name(ScratchRole role);

class SharedScratch {
 public:
  explicit SharedScratch(TensorPool& pool) : pool_(pool) {}
  SharedScratch(const SharedScratch&) = delete;
  SharedScratch& operator=(const SharedScratch&) = delete;

  // The buffer of `role`, allocated on first use.
  Tensor get(ScratchRole role, std::initializer_list<int64_t> shape, DType dtype);

 private:
  TensorPool& pool_;
  std::map<ScratchRole, Tensor> buffers_;
};

}  // namespace moe
