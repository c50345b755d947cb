// The token dispatcher of an MoE block (Megatron's role of that name): it
// takes each token to the experts its router chose and brings the experts'
// outputs back.
//   dispatch: sorts the (token, slot) pairs by expert (capacity drops the
//             overflow in token order, or, with a priority, keeps the pairs
//             of highest priority) and copies each kept pair's token into
//             a row, rows grouped by expert. Under expert parallelism it also
//             sends the rows to the ranks that hold their experts (an
//             all-to-all), so the caller always gets the rows of *its* experts.
//   combine:  the inverse: rows back to the ranks that routed them, then
//             out[n] = sum_k weight[n,k] * row of (n, k) (dropped pairs add 0).
// Backward runs the same path the other way, through the same plan. Every
// collective of expert parallelism is issued here (ExpertExchange), and
// every rank issues the same ones whatever the routing.
// Legend: N tokens, D dim, K slots per token (moe_slots), E experts, El local experts, M rows this
// rank routed, R rows its experts compute.
#pragma once

#include <cstdint>
#include <memory>

#include "src/model/layer_common.h"
#include "src/parallel/expert_exchange.h"

namespace moe {

// The rows the local experts compute forward: x in, y out (written by the
// experts), El+1 offsets of each local expert's rows, and, where the
// dispatcher keeps them, each row's (global micro-batch, pair) id (I32 [R, 2]).
struct ExpertRows {
  Tensor x_RD, y_RD, offsets, row_ids;
};

// The same rows backward: dy in, dx out (zeroed, for the experts to add to),
// and the forward's x.
struct ExpertGradRows {
  Tensor dy_RD, dx_RD, x_RD, offsets;
};

class TokenDispatcher {
 public:
  // local_experts: El. The capacities (rows each expert keeps per
  // micro-batch; 0: dropless) of training and of evaluation come from the
  // config. With row_ids, dispatch also gives each row's id (expert dropout
  // keys its mask by it), sent with the rows under expert parallelism.
  TokenDispatcher(const LayerContext& ctx, int64_t local_experts, bool row_ids);

  // priority_NK: empty, or the Router's capacity_priority.
  ExpertRows dispatch(const Tensor& x_ND, const Tensor& topk_idx_NK, const Tensor& priority_NK, bool training);
  // The tokens' permuted copies again, through the kept plan (selective checkpointing).
  void recompute_permute(const Tensor& x_ND);
  // out_ND = the weighted sum of each token's expert outputs (overwritten).
  void combine(const Tensor& out_ND, const Tensor& topk_w_NK);

  // From dout: dtopk_w_NK (written) and the experts' output gradients.
  ExpertGradRows combine_backward(const Tensor& dtopk_w_NK, const Tensor& dout_ND, const Tensor& topk_w_NK);
  // dx_ND += the experts' input gradients, summed over each token's slots.
  void dispatch_backward(const Tensor& dx_ND);

  // E+1 offsets (I32, global experts) of the rows this rank routed in the
  // last dispatch: offsets[E] kept rows; the statistics count from them.
  const Tensor& offsets() const { return offsets_E1_; }

 private:
  int64_t train_capacity_, eval_capacity_;
  Tensor offsets_E1_, row_pair_M_, pair_row_NK_;  // the plan of the last dispatch
  Tensor xs_MD_, ys_MD_;                          // rows for the most pairs a plan keeps; the first offsets[E] are used
  Tensor dxs_MD_, dys_MD_;                        // backward scratch
  std::unique_ptr<ExpertExchange> exchange_;      // ep > 1 only
  Tensor ex_x_RD_, ex_y_RD_, ex_dx_RD_, ex_dy_RD_;  // the local experts' rows, expert-major (ep > 1 only)
  const Tensor& noise_key_;
  Tensor row_ids_M2_;                  // (global micro-batch, pair) of each routed row (with row ids)
  Tensor ex_peer_ids_R2_, ex_ids_R2_;  // the same for the local experts' rows, peer- and expert-major (ep > 1)
};

}  // namespace moe
