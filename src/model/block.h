// One transformer block, pre-norm:
//   h = x + Attn(RMSNorm(x));  out = h + FFN(RMSNorm(h))
// where FFN is a dense SwiGLU MLP or, in blocks chosen by moe_frequency, the
// MoE layer. Under tensor parallelism the block is where the tp region opens
// and closes (Megatron's f and g): the attention and dense-MLP outputs are
// all-reduced in forward, their input gradients in backward. The MoE layer's
// routed and shared experts are replicated across tp: each tp rank computes
// the same tokens, so capacity and routing match one process exactly.
// Legend: N tokens, D dim.
#pragma once

#include <memory>

#include "src/model/attention.h"
#include "src/model/ffn.h"
#include "src/model/layer_common.h"
#include "src/model/moe/moe_layer.h"

namespace moe {

class Block {
 public:
  Block(const LayerContext& ctx, int64_t layer);

  // x_in_ND must stay unchanged until backward.
  void forward(const Tensor& out_ND, const Tensor& x_in_ND, ForwardPass pass, float grad_scale);
  // Right before backward, under activation checkpointing: writes again what
  // the blocks share (saved_activations.h) from x_in_ND and what this block
  // kept. Under "full" it is the training forward again, out_ND included (the
  // same values); under "none" it does nothing.
  void recompute(const Tensor& out_ND, const Tensor& x_in_ND, float grad_scale);
  // dx_in_ND is WRITTEN (not accumulated).
  void backward(const Tensor& dx_in_ND, const Tensor& dout_ND, const Tensor& x_in_ND);

  MoELayer* moe() { return moe_.get(); }

 private:
  float eps_;
  ActivationCheckpointing checkpointing_;
  Communicator& tp_;
  Param &ln1_, &ln2_;
  Attention attn_;
  std::unique_ptr<DenseMLP> mlp_;
  std::unique_ptr<MoELayer> moe_;
  Tensor ln1_out_, ln1_rstd_, attn_out_, h_, ln2_out_, ln2_rstd_, ffn_out_;
  Tensor dln_, dh_;
};

}  // namespace moe
