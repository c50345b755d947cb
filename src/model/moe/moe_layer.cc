#include "src/model/moe/moe_layer.h"

#include <stdexcept>

#include "src/config/derived.h"
#include "src/config/router_names.h"
#include "src/model/moe/routers.h"
#include "src/model/param_names.h"

namespace moe {
namespace {

Param* optional_param(ParamStore& params, const std::string& name, bool present) {
  return present ? &params[name] : nullptr;
}

}  // namespace

MoELayer::MoELayer(const LayerContext& ctx, int64_t layer)
    : layer_(layer),
      N_(ctx.N()),
      K_(moe_slots(ctx.model)),
      routed_pairs_(moe_routed_pairs(ctx.model, ctx.N())),
      experts_choose_(router_experts_choose(ctx.model.moe_router)),
      w1_(ctx.params[param_name::routed_experts(layer, "w1")]),
      w3_(ctx.params[param_name::routed_experts(layer, "w3")]),
      w2_(ctx.params[param_name::routed_experts(layer, "w2")]),
      shared_w1_(optional_param(ctx.params, param_name::shared_experts(layer, "w1"), ctx.model.moe_shared_experts > 0)),
      shared_w3_(optional_param(ctx.params, param_name::shared_experts(layer, "w3"), ctx.model.moe_shared_experts > 0)),
      shared_w2_(optional_param(ctx.params, param_name::shared_experts(layer, "w2"), ctx.model.moe_shared_experts > 0)),
      router_(make_router(ctx.model.moe_router,
                          {ctx.model, ctx.params[param_name::router_gate(layer)], ctx.N(), ctx.T, ctx.pool, ctx.scratch,
                           ctx.saved, ctx.act, ctx.noise_key, ctx.params, layer})),
      dispatcher_(ctx, w1_.place.local_shape[0], ctx.model.moe_expert_dropout > 0),
      routed_(ctx, kRoutedExpertsScratch, moe_max_local_rows(ctx.model, ctx.N(), ctx.parallel.ep->size()),
              expert_hidden(ctx.model), w1_.place.local_shape[0]),
      counters_(ctx.moe_counters) {
  TensorPool& pool = ctx.pool;
  // The mask of a row is keyed by its (global micro-batch, pair) id, which
  // the dispatcher gives with the rows (sent along under expert parallelism).
  if (ctx.model.moe_expert_dropout > 0) {
    const auto keep = static_cast<float>(1 - ctx.model.moe_expert_dropout);
    expert_dropout_ = std::make_unique<HiddenDropout>(HiddenDropout{Tensor{},
                                                                    N_ * K_,
                                                                    ctx.noise_key,
                                                                    noise_stream(layer, NoiseUse::kExpertDropout),
                                                                    {noise::Kind::kKeep, keep, 0}});
  }
  for (int64_t s = 0; s < ctx.model.moe_shared_experts; ++s) {
    shared_.push_back(std::make_unique<GroupedSwiGLU>(ctx, kSharedExpertsScratch, N_, expert_hidden(ctx.model), 1));
  }
  dtopk_w_NK_ = ctx.scratch.get(ScratchRole::kMoeDtopkW, {N_, K_}, DType::kF32);
  shared_offsets_ = pool.alloc({2}, DType::kI32);
  const int32_t all_rows[2] = {0, static_cast<int32_t>(N_)};  // one group: every token
  upload(shared_offsets_, all_rows);
  shared_out_ND_ = ctx.scratch_act(ScratchRole::kMoeSharedOut, {N_, ctx.model.dim});
  if (counters_ == nullptr) {
    throw std::logic_error("MoELayer " + param_name::moe(layer) + ": built without MoEStepCounters");
  }
  const MoEStepCounters::Counters counters = counters_->claim();
  counters_index_ = counters.index;
  routed_counts_E_ = counters.routed_E;
  kept_counts_E_ = counters.kept_E;
  aux_step_3_ = counters.aux_3;
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
  pairs_ += routed_pairs_;
  micro_batches_ += 1;
}

MoEStepStats MoELayer::step_stats() const {
  MoEStepStats s;
  s.kept_per_expert = counters_->kept(counters_index_);
  // When the experts choose, a token offers itself to every expert: what
  // routes it is the experts' choice, so the pairs routed are the ones kept.
  s.routed_per_expert = experts_choose_ ? s.kept_per_expert : counters_->routed(counters_index_);
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

void MoELayer::forward(const Tensor& out_ND, const Tensor& x_ND, ForwardPass pass, float grad_scale) {
  const bool training = pass != ForwardPass::kEval;
  router_->forward(x_ND, training, grad_scale);
  const ExpertRows rows = dispatcher_.dispatch(x_ND, router_->topk_idx(), router_->capacity_priority(), training);
  if (expert_dropout_) expert_dropout_->row_ids = rows.row_ids;
  routed_.forward(rows.y_RD, rows.x_RD, routed_weights(), rows.offsets, training ? expert_dropout_.get() : nullptr);
  dispatcher_.combine(out_ND, router_->topk_w());

  for (size_t s = 0; s < shared_.size(); ++s) {
    shared_[s]->forward(shared_out_ND_, x_ND, shared_weights(s), shared_offsets_);
    ops::add(out_ND, out_ND, shared_out_ND_);
  }

  if (pass == ForwardPass::kTrain) {
    ops::moe_count_experts(routed_counts_E_, kept_counts_E_, router_->topk_idx(), dispatcher_.offsets());
    ops::add(aux_step_3_, aux_step_3_, router_->aux_losses());
  }
}

void MoELayer::recompute_elementwise(const Tensor& x_ND) {
  dispatcher_.recompute_permute(x_ND);
  routed_.recompute_elementwise();
  for (const auto& shared : shared_) shared->recompute_elementwise();
}

void MoELayer::backward(const Tensor& dx_ND, const Tensor& dout_ND, const Tensor& x_ND) {
  for (size_t s = 0; s < shared_.size(); ++s)
    shared_[s]->backward(dx_ND, dout_ND, x_ND, shared_weights(s), shared_offsets_);

  const ExpertGradRows rows = dispatcher_.combine_backward(dtopk_w_NK_, dout_ND, router_->topk_w());
  routed_.backward(rows.dx_RD, rows.dy_RD, rows.x_RD, routed_weights(), rows.offsets);
  dispatcher_.dispatch_backward(dx_ND);
  router_->backward(dx_ND, dtopk_w_NK_, x_ND);
}

}  // namespace moe
