#include "src/model/moe_layer.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "src/config/derived.h"

namespace moe {
namespace {

double mean_of(const std::vector<int64_t>& counts) {
  double sum = 0;
  for (int64_t c : counts) sum += static_cast<double>(c);
  return counts.empty() ? 0.0 : sum / static_cast<double>(counts.size());
}

}  // namespace

MoELayer::MoELayer(const LayerContext& ctx, const std::string& prefix)
    : kind_(ctx.model.moe_router == "sigmoid_topk" ? ops::RouterKind::kSigmoidTopK : ops::RouterKind::kSoftmaxTopK),
      N_(ctx.N()),
      T_(ctx.T),
      D_(ctx.model.dim),
      E_(ctx.model.num_experts),
      K_(ctx.model.moe_top_k),
      capacity_(moe_capacity(ctx.model, ctx.N())),
      local_experts_(ctx.params[prefix + "block_sparse_moe.experts.w1"].place.local_shape[0]),
      w_lb_(static_cast<float>(ctx.model.moe_aux_loss_weight)),
      w_z_(static_cast<float>(ctx.model.moe_router_z_loss_weight)),
      w_seq_(static_cast<float>(ctx.model.moe_sequence_aux_loss_weight)),
      router_(ctx.params[prefix + "block_sparse_moe.gate.weight"]),
      w1_(ctx.params[prefix + "block_sparse_moe.experts.w1"]),
      w3_(ctx.params[prefix + "block_sparse_moe.experts.w3"]),
      w2_(ctx.params[prefix + "block_sparse_moe.experts.w2"]),
      routed_(ctx, "routed_experts", moe_max_local_rows(ctx.model, ctx.N(), ctx.parallel.ep->size()),
              expert_hidden(ctx.model), local_experts_),
      counters_(ctx.moe_counters) {
  TensorPool& pool = ctx.pool;
  const int64_t F = expert_hidden(ctx.model);
  if (ctx.parallel.ep->size() > 1) {
    const int64_t R = moe_max_local_rows(ctx.model, ctx.N(), ctx.parallel.ep->size());
    exchange_ = std::make_unique<ExpertExchange>(*ctx.parallel.ep, local_experts_, R, D_, pool, ctx.act);
    ex_x_RD_ = ctx.alloc_act({R, D_});  // saved: the local experts' input rows
    ex_y_RD_ = ctx.scratch_act("moe.ex_y", {R, D_});
    ex_dx_RD_ = ctx.scratch_act("moe.ex_dx", {R, D_});
    ex_dy_RD_ = ctx.scratch_act("moe.ex_dy", {R, D_});
  }
  if (ctx.model.moe_shared_experts > 0) {
    shared_w1_ = &ctx.params[prefix + "block_sparse_moe.shared_experts.w1"];
    shared_w3_ = &ctx.params[prefix + "block_sparse_moe.shared_experts.w3"];
    shared_w2_ = &ctx.params[prefix + "block_sparse_moe.shared_experts.w2"];
  }
  for (int64_t s = 0; s < ctx.model.moe_shared_experts; ++s) {
    shared_.push_back(std::make_unique<GroupedSwiGLU>(ctx, "shared_experts", N_, F, 1));
  }
  ops::reserve_router_aux_losses(pool.device(), N_, T_, E_);
  bias_E_ = pool.alloc({E_});
  logits_NE_ = pool.alloc({N_, E_});
  scores_NE_ = pool.alloc({N_, E_});
  daux_logits_NE_ = pool.alloc({N_, E_});
  dlogits_NE_ = ctx.scratch.get("moe.dlogits", {N_, E_}, DType::kF32);
  topk_idx_NK_ = pool.alloc({N_, K_}, DType::kI32);
  topk_w_NK_ = pool.alloc({N_, K_});
  dtopk_w_NK_ = ctx.scratch.get("moe.dtopk_w", {N_, K_}, DType::kF32);
  offsets_E1_ = pool.alloc({E_ + 1}, DType::kI32);
  row_pair_M_ = pool.alloc({N_ * K_}, DType::kI32);
  pair_row_NK_ = pool.alloc({N_, K_}, DType::kI32);
  for (Tensor* t : {&xs_MD_, &ys_MD_}) *t = ctx.alloc_act({N_ * K_, D_});  // saved for backward
  dxs_MD_ = ctx.scratch_act("moe.dxs", {N_ * K_, D_});
  dys_MD_ = ctx.scratch_act("moe.dys", {N_ * K_, D_});
  if (ctx.act != DType::kF32) dlogits_act_NE_ = ctx.scratch_act("moe.dlogits_act", {N_, E_});
  shared_offsets_ = pool.alloc({2}, DType::kI32);
  const int32_t all_rows[2] = {0, static_cast<int32_t>(N_)};  // one group: every token
  upload(shared_offsets_, all_rows);
  shared_out_ND_ = ctx.scratch_act("moe.shared_out", {N_, D_});
  if (counters_ == nullptr) throw std::logic_error("MoELayer " + prefix + ": built without MoEStepCounters");
  const MoEStepCounters::Counters counters = counters_->claim();
  counters_index_ = counters.index;
  routed_counts_E_ = counters.routed_E;
  kept_counts_E_ = counters.kept_E;
  aux_step_3_ = counters.aux_3;
  aux_3_ = pool.alloc({3});
  reset_step_stats();
}

ExpertWeights MoELayer::routed_weights() const {
  return {w1_.value, w3_.value, w2_.value, w1_.grad, w3_.grad, w2_.grad};
}

ExpertWeights MoELayer::shared_weights(size_t s) const {
  const auto i = static_cast<int64_t>(s);
  const Param &w1 = *shared_w1_, &w3 = *shared_w3_, &w2 = *shared_w2_;
  return {w1.value.rows(i, 1), w3.value.rows(i, 1), w2.value.rows(i, 1),
          w1.grad.rows(i, 1),  w3.grad.rows(i, 1),  w2.grad.rows(i, 1)};
}

void MoELayer::reset_step_stats() { pairs_ = micro_batches_ = 0; }

void MoELayer::count_micro_batch() {
  pairs_ += N_ * K_;
  micro_batches_ += 1;
}

double MoELayer::last_aux_loss() const {
  float aux[3];
  download(aux, aux_3_);
  return w_lb_ * aux[0] + w_z_ * aux[1] + w_seq_ * aux[2];
}

MoEStepStats MoELayer::step_stats() const {
  MoEStepStats s;
  s.routed_per_expert = counters_->routed(counters_index_);
  s.kept_per_expert = counters_->kept(counters_index_);
  s.pairs = pairs_;
  int64_t kept = 0;
  for (int64_t c : s.kept_per_expert) kept += c;
  s.dropped = s.pairs - kept;
  s.load_balance = counters_->aux(counters_index_, 0);
  s.z_loss = counters_->aux(counters_index_, 1);
  s.sequence_balance = counters_->aux(counters_index_, 2);
  s.micro_batches = micro_batches_;
  return s;
}

void MoELayer::forward(const Tensor& out_ND, const Tensor& x_ND, bool training, float grad_scale) {
  ops::matmul_forward(logits_NE_, x_ND, router_.value);
  const Tensor bias = kind_ == ops::RouterKind::kSigmoidTopK ? bias_E_ : Tensor{};
  ops::router_forward(topk_idx_NK_, topk_w_NK_, scores_NE_, logits_NE_, bias, kind_);
  ops::router_aux_losses(aux_3_, daux_logits_NE_, logits_NE_, scores_NE_, topk_idx_NK_, T_, kind_, w_lb_, w_z_, w_seq_,
                         grad_scale);
  ops::moe_plan(offsets_E1_, row_pair_M_, pair_row_NK_, topk_idx_NK_, capacity_);

  ops::moe_permute(xs_MD_, x_ND, pair_row_NK_);
  if (exchange_) {
    exchange_->plan(offsets_E1_);
    const int64_t M = exchange_->routed_rows(), R = exchange_->local_rows();
    exchange_->dispatch(xs_MD_.rows(0, M));  // into peer-major order
    ops::gather_rows(ex_x_RD_, exchange_->peer_major(), exchange_->expert_from_peer());
    routed_.forward(ex_y_RD_.rows(0, R), ex_x_RD_.rows(0, R), routed_weights(), exchange_->local_offsets());
    ops::gather_rows(exchange_->peer_major(), ex_y_RD_, exchange_->peer_from_expert());
    exchange_->combine(ys_MD_.rows(0, M));
  } else {
    routed_.forward(ys_MD_, xs_MD_, routed_weights(), offsets_E1_);  // rows past offsets[E] are not computed
  }
  zero(out_ND);
  ops::moe_unpermute(out_ND, ys_MD_, topk_w_NK_, pair_row_NK_);

  for (size_t s = 0; s < shared_.size(); ++s) {
    shared_[s]->forward(shared_out_ND_, x_ND, shared_weights(s), shared_offsets_);
    ops::add(out_ND, out_ND, shared_out_ND_);
  }

  if (training) {
    ops::moe_count_experts(routed_counts_E_, kept_counts_E_, topk_idx_NK_, offsets_E1_);
    ops::add(aux_step_3_, aux_step_3_, aux_3_);
  }
}

void MoELayer::backward(const Tensor& dx_ND, const Tensor& dout_ND, const Tensor& x_ND) {
  for (size_t s = 0; s < shared_.size(); ++s)
    shared_[s]->backward(dx_ND, dout_ND, x_ND, shared_weights(s), shared_offsets_);

  ops::moe_unpermute_backward(dys_MD_, dtopk_w_NK_, dout_ND, ys_MD_, topk_w_NK_, pair_row_NK_);
  if (exchange_) {
    const int64_t M = exchange_->routed_rows(), R = exchange_->local_rows();
    exchange_->dispatch(dys_MD_.rows(0, M));
    ops::gather_rows(ex_dy_RD_, exchange_->peer_major(), exchange_->expert_from_peer());
    const Tensor ex_dx = ex_dx_RD_.rows(0, R);
    zero(ex_dx);
    routed_.backward(ex_dx, ex_dy_RD_.rows(0, R), ex_x_RD_.rows(0, R), routed_weights(), exchange_->local_offsets());
    ops::gather_rows(exchange_->peer_major(), ex_dx_RD_, exchange_->peer_from_expert());
    exchange_->combine(dxs_MD_.rows(0, M));
  } else {
    zero(dxs_MD_);
    routed_.backward(dxs_MD_, dys_MD_, xs_MD_, routed_weights(), offsets_E1_);
  }
  ops::moe_permute_backward(dx_ND, dxs_MD_, pair_row_NK_);

  copy_tensor(dlogits_NE_, daux_logits_NE_);
  ops::router_backward(dlogits_NE_, dtopk_w_NK_, topk_idx_NK_, topk_w_NK_, scores_NE_, kind_);
  // The router's math is fp32; its GEMM takes the gradient in the activation dtype.
  const Tensor dlogits = dlogits_act_NE_.data ? dlogits_act_NE_ : dlogits_NE_;
  if (dlogits.data != dlogits_NE_.data) ops::cast(dlogits, dlogits_NE_);
  ops::matmul_backward(dx_ND, router_.grad, dlogits, x_ND, router_.value);
}

void MoELayer::scale_expert_gradients(const MoEStepStats& step) {
  const double mean = mean_of(step.kept_per_expert);
  // This rank's shard holds elements [shard_begin, shard_begin + shard_valid)
  // of its local experts, flattened; local expert r (global expert
  // local_offset[0] + r) is elements [r * per_expert, (r + 1) * per_expert).
  const ParamPlacement& place = w1_.place;
  const int64_t per_expert = place.local_numel() / local_experts_;
  const int64_t begin = place.shard_begin, end = place.shard_begin + place.shard_valid;
  for (int64_t r = 0; r < local_experts_; ++r) {
    const int64_t lo = std::max(begin, r * per_expert), hi = std::min(end, (r + 1) * per_expert);
    if (lo >= hi) continue;
    const int64_t e = place.local_offset[0] + r;
    const auto load = static_cast<double>(step.kept_per_expert[static_cast<size_t>(e)]);
    const float factor = static_cast<float>(load > 0 ? std::clamp(mean / load, 0.1, 10.0) : 10.0);
    for (Param* p : {&w1_, &w3_, &w2_}) {
      const Tensor flat = p->shard_grad.reshaped({p->shard_grad.numel()});
      ops::scale_inplace(flat.rows(lo - begin, hi - lo), factor);
    }
  }
}

void MoELayer::update_bias(double rate, const MoEStepStats& step) {
  if (kind_ != ops::RouterKind::kSigmoidTopK) return;
  const double mean = mean_of(step.routed_per_expert);
  std::vector<float> bias(static_cast<size_t>(E_));
  download(bias.data(), bias_E_);
  for (int64_t e = 0; e < E_; ++e) {
    const double load = static_cast<double>(step.routed_per_expert[static_cast<size_t>(e)]);
    const double sign = load < mean ? 1.0 : (load > mean ? -1.0 : 0.0);
    bias[static_cast<size_t>(e)] = static_cast<float>(bias[static_cast<size_t>(e)] + rate * sign);
  }
  upload(bias_E_, bias.data());
}

}  // namespace moe
