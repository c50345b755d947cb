#include "src/model/attention.h"

#include "src/config/derived.h"
#include "src/kernels/ops.h"

namespace moe {

Attention::Attention(const LayerContext& ctx, const std::string& prefix)
    : B_(ctx.B),
      T_(ctx.T),
      // This rank's heads: all of them, or n_heads / tp and n_kv_heads / tp under tensor parallelism.
      H_(ctx.params[prefix + "self_attn.q_proj.weight"].place.local_shape[0] / head_dim(ctx.model)),
      G_(ctx.params[prefix + "self_attn.k_proj.weight"].place.local_shape[0] / head_dim(ctx.model)),
      Dh_(head_dim(ctx.model)),
      rope_theta_(static_cast<float>(ctx.model.rope_theta)),
      wq_(ctx.params[prefix + "self_attn.q_proj.weight"]),
      wk_(ctx.params[prefix + "self_attn.k_proj.weight"]),
      wv_(ctx.params[prefix + "self_attn.v_proj.weight"]),
      wo_(ctx.params[prefix + "self_attn.o_proj.weight"]),
      gemm_(ctx.dense_gemm) {
  for (Tensor* t : {&q_, &att_}) *t = ctx.save_act(SavedKind::kProduct, {B_, T_, H_, Dh_});
  for (Tensor* t : {&k_, &v_}) *t = ctx.save_act(SavedKind::kProduct, {B_, T_, G_, Dh_});
  lse_ = ctx.save(SavedKind::kProduct, {B_, H_, T_}, DType::kF32);
  dq_ = ctx.scratch_act(ScratchRole::kAttentionDq, {B_, T_, H_, Dh_});
  datt_ = ctx.scratch_act(ScratchRole::kAttentionDatt, {B_, T_, H_, Dh_});
  dk_ = ctx.scratch_act(ScratchRole::kAttentionDk, {B_, T_, G_, Dh_});
  dv_ = ctx.scratch_act(ScratchRole::kAttentionDv, {B_, T_, G_, Dh_});
  ops::reserve_attention(ctx.pool.device(), B_, T_, H_, G_, Dh_, q_.dtype);
  const int64_t N = B_ * T_, D = ctx.model.dim;
  for (const int64_t O : {H_ * Dh_, G_ * Dh_}) reserve_dense(gemm_, ctx.pool.device(), N, D, O);
  reserve_dense(gemm_, ctx.pool.device(), N, H_ * Dh_, D);
}

void Attention::forward(const Tensor& out_ND, const Tensor& x_ND) {
  const int64_t N = B_ * T_;
  dense_forward(gemm_, q_.reshaped({N, H_ * Dh_}), x_ND, wq_);
  dense_forward(gemm_, k_.reshaped({N, G_ * Dh_}), x_ND, wk_);
  dense_forward(gemm_, v_.reshaped({N, G_ * Dh_}), x_ND, wv_);
  ops::rope_forward(q_, rope_theta_);
  ops::rope_forward(k_, rope_theta_);
  ops::attention_forward(att_, lse_, q_, k_, v_);
  dense_forward(gemm_, out_ND, att_.reshaped({N, H_ * Dh_}), wo_);
}

void Attention::backward(const Tensor& dx_ND, const Tensor& dout_ND, const Tensor& x_ND) {
  const int64_t N = B_ * T_;
  dense_backward(gemm_, datt_.reshaped({N, H_ * Dh_}), wo_, dout_ND, att_.reshaped({N, H_ * Dh_}),
                 ops::GradInto::kWrite);
  ops::attention_backward(dq_, dk_, dv_, datt_, q_, k_, v_, att_, lse_);
  ops::rope_backward(dq_, rope_theta_);
  ops::rope_backward(dk_, rope_theta_);
  dense_backward(gemm_, dx_ND, wq_, dq_.reshaped({N, H_ * Dh_}), x_ND, ops::GradInto::kWrite);
  dense_backward(gemm_, dx_ND, wk_, dk_.reshaped({N, G_ * Dh_}), x_ND);
  dense_backward(gemm_, dx_ND, wv_, dv_.reshaped({N, G_ * Dh_}), x_ND);
}

}  // namespace moe
