#include "src/model/block.h"

#include "src/config/derived.h"
#include "src/kernels/ops.h"
#include "src/model/param_names.h"

namespace moe {

Block::Block(const LayerContext& ctx, int64_t layer)
    : eps_(static_cast<float>(ctx.model.norm_eps)),
      checkpointing_(ctx.saved.mode()),
      tp_(*ctx.parallel.tp),
      ln1_(ctx.params[param_name::block(layer) + "input_layernorm.weight"]),
      ln2_(ctx.params[param_name::block(layer) + "post_attention_layernorm.weight"]),
      attn_(ctx, param_name::block(layer)) {
  if (is_moe_block(ctx.model, layer)) {
    moe_ = std::make_unique<MoELayer>(ctx, layer);
  } else {
    mlp_ = std::make_unique<DenseMLP>(ctx, param_name::block(layer));
  }
  const int64_t N = ctx.N(), D = ctx.model.dim;
  for (Tensor* t : {&ln1_out_, &ln2_out_}) *t = ctx.save_act(SavedKind::kElementwise, {N, D});
  h_ = ctx.save_act(SavedKind::kProduct, {N, D});  // x + attn: a selective recompute of norm 2 starts from it
  attn_out_ = ctx.scratch_act(ScratchRole::kBlockAttnOut, {N, D});
  ffn_out_ = ctx.scratch_act(ScratchRole::kBlockFfnOut, {N, D});
  dln_ = ctx.scratch_act(ScratchRole::kBlockDln, {N, D});
  dh_ = ctx.scratch_act(ScratchRole::kBlockDh, {N, D});
  ln1_rstd_ = ctx.save(SavedKind::kProduct, {N}, DType::kF32);
  ln2_rstd_ = ctx.save(SavedKind::kProduct, {N}, DType::kF32);
  ops::reserve_rmsnorm_backward(ctx.pool.device(), N, D);
}

void Block::forward(const Tensor& out_ND, const Tensor& x_in_ND, ForwardPass pass, float grad_scale) {
  ops::rmsnorm_forward(ln1_out_, ln1_rstd_, x_in_ND, ln1_.value, eps_);
  attn_.forward(attn_out_, ln1_out_);
  tp_.all_reduce(attn_out_, ReduceOp::kSum);  // row-parallel o_proj: sum the heads' partial outputs
  ops::add_rmsnorm_forward(h_, ln2_out_, ln2_rstd_, x_in_ND, attn_out_, ln2_.value, eps_);  // h = x + attn
  if (moe_) {
    moe_->forward(ffn_out_, ln2_out_, pass, grad_scale);
  } else {
    mlp_->forward(ffn_out_, ln2_out_);
    tp_.all_reduce(ffn_out_, ReduceOp::kSum);
  }
  ops::add(out_ND, h_, ffn_out_);
}

void Block::recompute(const Tensor& out_ND, const Tensor& x_in_ND, float grad_scale) {
  switch (checkpointing_) {
    case ActivationCheckpointing::kNone: return;
    case ActivationCheckpointing::kFull: forward(out_ND, x_in_ND, ForwardPass::kRecompute, grad_scale); return;
    case ActivationCheckpointing::kSelective:
      // The same kernels on the same inputs as forward: norm 2 of the kept
      // h = x + attn equals the fused add-and-norm's, bit for bit.
      ops::rmsnorm_forward(ln1_out_, ln1_rstd_, x_in_ND, ln1_.value, eps_);
      ops::rmsnorm_forward(ln2_out_, ln2_rstd_, h_, ln2_.value, eps_);
      if (moe_) {
        moe_->recompute_elementwise(ln2_out_);
      } else {
        mlp_->recompute_elementwise();
      }
      return;
  }
}

void Block::backward(const Tensor& dx_in_ND, const Tensor& dout_ND, const Tensor& x_in_ND) {
  // out = h + ffn(norm2(h)): dh = dout + norm2'^T ffn'^T dout
  zero(dln_);
  if (moe_) {
    moe_->backward(dln_, dout_ND, ln2_out_);
  } else {
    mlp_->backward(dln_, dout_ND, ln2_out_);
    tp_.all_reduce(dln_, ReduceOp::kSum);  // column-parallel inputs: sum the partial input gradients
  }
  ops::rmsnorm_backward(dh_, ln2_.grad, dln_, h_, ln2_.value, ln2_rstd_, /*dresidual=*/dout_ND);
  // h = x + attn(norm1(x)): dx = dh + norm1'^T attn'^T dh
  attn_.backward(dln_, dh_, ln1_out_);  // writes dln
  tp_.all_reduce(dln_, ReduceOp::kSum);
  ops::rmsnorm_backward(dx_in_ND, ln1_.grad, dln_, x_in_ND, ln1_.value, ln1_rstd_, /*dresidual=*/dh_);
}

}  // namespace moe
