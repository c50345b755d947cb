#include "src/model/moe/router.h"

#include "src/config/derived.h"
#include "src/model/layer_common.h"

namespace moe {

Router::Router(const RouterSetup& s)
    : N_(s.N),
      T_(s.T),
      E_(s.model.num_experts),
      K_(s.decoding ? s.model.moe_top_k : moe_slots(s.model)),
      gate_(s.gate),
      w_lb_(static_cast<float>(s.model.moe_aux_loss_weight)),
      w_z_(static_cast<float>(s.model.moe_router_z_loss_weight)),
      w_seq_(static_cast<float>(s.model.moe_sequence_aux_loss_weight)),
      noise_key_(s.noise_key),
      jitter_stream_(noise_stream(s.layer, NoiseUse::kRouterJitter)),
      jitter_{noise::Kind::kUniform, static_cast<float>(1 - s.model.moe_router_jitter),
              static_cast<float>(1 + s.model.moe_router_jitter)} {
  TensorPool& pool = s.pool;
  ops::reserve_router_aux_losses(pool.device(), N_, T_, E_);
  // A recompute routes again with the same logits (and the same bias: it
  // moves only at the end of a step), so the routing is saved as a product.
  logits_NE_ = s.saved.get(SavedKind::kProduct, {N_, E_}, DType::kF32);
  scores_NE_ = s.saved.get(SavedKind::kProduct, {N_, E_}, DType::kF32);
  topk_idx_NK_ = s.saved.get(SavedKind::kProduct, {N_, K_}, DType::kI32);
  topk_w_NK_ = s.saved.get(SavedKind::kProduct, {N_, K_}, DType::kF32);
  daux_logits_NE_ = s.saved.get(SavedKind::kProduct, {N_, E_}, DType::kF32);
  bias_E_ = pool.alloc({E_});  // learned state, and aux_3_ read after the pass: the layer's own
  aux_3_ = pool.alloc({3});
  dlogits_NE_ = s.scratch.get(ScratchRole::kMoeDlogits, {N_, E_}, DType::kF32);
  if (s.act != DType::kF32) dlogits_act_NE_ = s.scratch.get(ScratchRole::kMoeDlogitsAct, {N_, E_}, s.act);
  if (s.model.moe_router_jitter > 0) {
    const int64_t D = s.model.dim;
    jittered_x_ND_ = s.scratch.get(ScratchRole::kMoeRouterInput, {N_, D}, s.act);
    djittered_x_ND_ = s.scratch.get(ScratchRole::kMoeRouterDx, {N_, D}, s.act);
  }
}

const Tensor& Router::input(const Tensor& x_ND, bool training) {
  if (!training || !jittered_x_ND_.data) return x_ND;
  ops::multiply_noise(jittered_x_ND_, x_ND, noise_key_, jitter_stream_, jitter_);
  return jittered_x_ND_;
}

void Router::forward(const Tensor& x_ND, bool training, float grad_scale) {
  const Tensor& in = input(x_ND, training);
  ops::matmul_forward(logits_NE_, in, gate_.value);
  if (training) add_to_logits(in);
  select();
  if (!training) return;
  ops::router_aux_losses(aux_3_, daux_logits_NE_, logits_NE_, scores_NE_, topk_idx_NK_, T_, balance_scores(), w_lb_,
                         w_z_, w_seq_, grad_scale);
}

void Router::backward(const Tensor& dx_ND, const Tensor& dtopk_w_NK, const Tensor& x_ND) {
  copy_tensor(dlogits_NE_, daux_logits_NE_);
  select_backward(dlogits_NE_, dtopk_w_NK);
  const Tensor dlogits = for_gemm(dlogits_NE_, dlogits_act_NE_);
  if (!jittered_x_ND_.data) {
    ops::matmul_backward(dx_ND, gate_.grad, dlogits, x_ND, gate_.value);
    add_to_logits_backward(dx_ND, dlogits_NE_, x_ND);
    return;
  }
  // logits = (x * u) Wr^T: the gate's gradient from x * u (drawn again), and
  // dx += (dlogits Wr) * u.
  const Tensor& xu = input(x_ND, true);
  ops::matmul_backward(djittered_x_ND_, gate_.grad, dlogits, xu, gate_.value, ops::GradInto::kWrite);
  add_to_logits_backward(djittered_x_ND_, dlogits_NE_, xu);
  ops::multiply_noise(djittered_x_ND_, djittered_x_ND_, noise_key_, jitter_stream_, jitter_);
  ops::add(dx_ND, dx_ND, djittered_x_ND_);
}

Tensor Router::for_gemm(const Tensor& grad_f32, const Tensor& act_copy) {
  if (!act_copy.data) return grad_f32;
  ops::cast(act_copy, grad_f32);
  return act_copy;
}

double Router::last_weighted_aux_loss() const {
  float aux[3];
  download(aux, aux_3_);
  return w_lb_ * aux[0] + w_z_ * aux[1] + w_seq_ * aux[2];
}

void Router::end_step(const MoEStepStats& /*step*/, double /*bias_rate*/) {}

}  // namespace moe
