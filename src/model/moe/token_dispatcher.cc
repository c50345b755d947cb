#include "src/model/moe/token_dispatcher.h"

#include "src/config/derived.h"
#include "src/kernels/ops.h"

namespace moe {

TokenDispatcher::TokenDispatcher(const LayerContext& ctx, int64_t local_experts, bool row_ids)
    : train_capacity_(moe_capacity(ctx.model, ctx.N(), true)),
      eval_capacity_(moe_capacity(ctx.model, ctx.N(), false)),
      noise_key_(ctx.noise_key) {
  TensorPool& pool = ctx.pool;
  const int64_t N = ctx.N(), D = ctx.model.dim, E = ctx.model.num_experts, K = moe_slots(ctx.model);
  const int64_t M = moe_max_local_rows(ctx.model, N, 1);  // the rows this rank's pairs may keep
  Communicator& ep = *ctx.parallel.ep;
  if (ep.size() > 1) {
    const int64_t R = moe_max_local_rows(ctx.model, N, ep.size());
    exchange_ = std::make_unique<ExpertExchange>(ep, local_experts, R, D, pool, ctx.act);
    ex_x_RD_ = ctx.save_act(SavedKind::kProduct, {R, D});  // the local experts' input rows, after the exchange
    ex_y_RD_ = ctx.scratch_act(ScratchRole::kMoeExY, {R, D});
    ex_dx_RD_ = ctx.scratch_act(ScratchRole::kMoeExDx, {R, D});
    ex_dy_RD_ = ctx.scratch_act(ScratchRole::kMoeExDy, {R, D});
    if (row_ids) {
      ex_peer_ids_R2_ = ctx.scratch.get(ScratchRole::kMoeExPeerIds, {R, 2}, DType::kI32);
      ex_ids_R2_ = ctx.save(SavedKind::kProduct, {R, 2}, DType::kI32);
    }
  }
  if (row_ids) row_ids_M2_ = ctx.save(SavedKind::kProduct, {N * K, 2}, DType::kI32);
  offsets_E1_ = ctx.save(SavedKind::kProduct, {E + 1}, DType::kI32);
  row_pair_M_ = ctx.save(SavedKind::kProduct, {N * K}, DType::kI32);
  pair_row_NK_ = ctx.save(SavedKind::kProduct, {N, K}, DType::kI32);
  xs_MD_ = ctx.save_act(SavedKind::kElementwise, {M, D});
  ys_MD_ = ctx.save_act(SavedKind::kProduct, {M, D});
  dxs_MD_ = ctx.scratch_act(ScratchRole::kMoeDxs, {M, D});
  dys_MD_ = ctx.scratch_act(ScratchRole::kMoeDys, {M, D});
}

void TokenDispatcher::recompute_permute(const Tensor& x_ND) {
  // Under expert parallelism backward reads the exchanged rows, which are kept.
  if (!exchange_) ops::moe_permute(xs_MD_, x_ND, pair_row_NK_);
}

ExpertRows TokenDispatcher::dispatch(const Tensor& x_ND, const Tensor& topk_idx_NK, const Tensor& priority_NK,
                                     bool training) {
  ops::moe_plan(offsets_E1_, row_pair_M_, pair_row_NK_, topk_idx_NK, training ? train_capacity_ : eval_capacity_,
                priority_NK);
  ops::moe_permute(xs_MD_, x_ND, pair_row_NK_);
  // Row ids key expert dropout, which only training applies.
  const bool ids = training && row_ids_M2_.data != nullptr;
  if (ids) ops::noise_row_ids(row_ids_M2_, row_pair_M_, noise_key_);
  // One process: the rows past offsets[E] are not computed.
  if (!exchange_) return {xs_MD_, ys_MD_, offsets_E1_, ids ? row_ids_M2_ : Tensor{}};
  exchange_->plan(offsets_E1_);  // reads the offsets back: the all-to-all sizes live on the host
  const int64_t M = exchange_->routed_rows(), R = exchange_->local_rows();
  exchange_->dispatch(xs_MD_.rows(0, M));  // into peer-major order
  ops::gather_rows(ex_x_RD_, exchange_->peer_major(), exchange_->expert_from_peer());
  if (!ids) return {ex_x_RD_.rows(0, R), ex_y_RD_.rows(0, R), exchange_->local_offsets(), Tensor{}};
  exchange_->dispatch(ex_peer_ids_R2_, row_ids_M2_.rows(0, M));
  ops::gather_rows(ex_ids_R2_, ex_peer_ids_R2_, exchange_->expert_from_peer());
  return {ex_x_RD_.rows(0, R), ex_y_RD_.rows(0, R), exchange_->local_offsets(), ex_ids_R2_.rows(0, R)};
}

void TokenDispatcher::combine(const Tensor& out_ND, const Tensor& topk_w_NK) {
  if (exchange_) {
    ops::gather_rows(exchange_->peer_major(), ex_y_RD_, exchange_->peer_from_expert());
    exchange_->combine(ys_MD_.rows(0, exchange_->routed_rows()));
  }
  zero(out_ND);
  ops::moe_unpermute(out_ND, ys_MD_, topk_w_NK, pair_row_NK_);
}

ExpertGradRows TokenDispatcher::combine_backward(const Tensor& dtopk_w_NK, const Tensor& dout_ND,
                                                 const Tensor& topk_w_NK) {
  ops::moe_unpermute_backward(dys_MD_, dtopk_w_NK, dout_ND, ys_MD_, topk_w_NK, pair_row_NK_);
  if (!exchange_) {
    zero(dxs_MD_);
    return {dys_MD_, dxs_MD_, xs_MD_, offsets_E1_};
  }
  const int64_t M = exchange_->routed_rows(), R = exchange_->local_rows();
  exchange_->dispatch(dys_MD_.rows(0, M));
  ops::gather_rows(ex_dy_RD_, exchange_->peer_major(), exchange_->expert_from_peer());
  const Tensor ex_dx = ex_dx_RD_.rows(0, R);
  zero(ex_dx);
  return {ex_dy_RD_.rows(0, R), ex_dx, ex_x_RD_.rows(0, R), exchange_->local_offsets()};
}

void TokenDispatcher::dispatch_backward(const Tensor& dx_ND) {
  if (exchange_) {
    ops::gather_rows(exchange_->peer_major(), ex_dx_RD_, exchange_->peer_from_expert());
    exchange_->combine(dxs_MD_.rows(0, exchange_->routed_rows()));
  }
  ops::moe_permute_backward(dx_ND, dxs_MD_, pair_row_NK_);
}

}  // namespace moe
