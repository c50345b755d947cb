// The MoE feed-forward of one block, in Megatron's roles:
//   router      (router.h, one of routers.h): picks each token's top-k
//               experts and weights from logits = x Wr^T (under expert
//               choice: offers each token to every expert, with a priority
//               for the capacity), and the aux losses;
//   dispatcher  (token_dispatcher.h): sorts the (token, slot) pairs by
//               expert, with capacity, and takes the rows to the experts'
//               ranks (expert parallelism) and back;
//   experts     (GroupedSwiGLU, ffn.h): this rank's routed experts as grouped
//               matmuls over their rows;
//   combine     (the dispatcher again): out = sum_k weight * expert_k(x),
//               plus the always-on shared experts.
// Per-step statistics (tokens per expert, drops, aux values) accumulate on
// the device (moe_step_counters.h) for the metrics, the router's end of step
// and moe_gradient_scale (train/moe_gradient_scale.h).
// Under expert parallelism this rank holds El = E/ep experts: it routes its own
// tokens (capacity and aux statistics per micro-batch, as one process does).
// Legend: N tokens, D dim, E experts, K slots per token (moe_slots), F expert hidden.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "src/model/ffn.h"
#include "src/model/layer_common.h"
#include "src/model/moe/moe_step_counters.h"
#include "src/model/moe/moe_step_stats.h"
#include "src/model/moe/router.h"
#include "src/model/moe/token_dispatcher.h"

namespace moe {

class MoELayer {
 public:
  MoELayer(const LayerContext& ctx, int64_t layer);

  // Training counts the statistics (a recompute and evaluation must not);
  // evaluation skips the aux losses. grad_scale multiplies the
  // aux losses' gradient (1 / grad_accum_steps). Without expert parallelism
  // nothing here reads a device value on the host: the routing (offsets, kept
  // rows, aux losses, counts) stays where it was computed. With it, the
  // exchange plan reads the offsets (the all-to-all sizes live on the host).
  void forward(const Tensor& out_ND, const Tensor& x_ND, ForwardPass pass, float grad_scale);
  // The permuted tokens and the SwiGLU products again (selective
  // checkpointing), from x_ND and what the last training forward kept.
  void recompute_elementwise(const Tensor& x_ND);
  void backward(const Tensor& dx_ND, const Tensor& dout_ND, const Tensor& x_ND);

  // This rank's statistics of the step so far. The per-expert counts and aux
  // sums accumulate where the routing runs (on the GPU for device tensors), in
  // the model's MoEStepCounters; step_stats() reads them as of the counters'
  // last download(), so call the model's read_moe_step_stats(), which
  // downloads once for all layers.
  MoEStepStats step_stats() const;
  // The host's part of a training micro-batch's statistics (pairs, micro-batch
  // count), outside forward so that a replayed forward counts too.
  void count_micro_batch();
  // The host's part of a new step's statistics; the model zeroes the device
  // counters of every layer at once (Transformer::reset_moe_step_stats).
  void reset_step_stats();
  // The weighted aux loss of the last training forward (a HOST SYNC; the gradient
  // checks of the tests read it, training does not).
  double last_aux_loss() const { return router_->last_weighted_aux_loss(); }

  Router& router() { return *router_; }
  int64_t layer() const { return layer_; }

 private:
  int64_t layer_, N_, K_;
  int64_t routed_pairs_;  // per training micro-batch (moe_routed_pairs)
  bool experts_choose_;   // router_experts_choose: the routed pairs are the kept ones
  Param &w1_, &w3_, &w2_;
  Param *shared_w1_ = nullptr, *shared_w3_ = nullptr, *shared_w2_ = nullptr;  // [S, ...]; null without shared experts
  std::unique_ptr<Router> router_;
  TokenDispatcher dispatcher_;
  GroupedSwiGLU routed_;
  std::vector<std::unique_ptr<GroupedSwiGLU>> shared_;
  std::unique_ptr<HiddenDropout> expert_dropout_;  // the routed experts' (moe_expert_dropout > 0)
  Tensor shared_offsets_, shared_out_ND_;
  Tensor dtopk_w_NK_;  // backward scratch
  // This layer's views of the model's MoEStepCounters: the step's counts
  // (I32 [E]), accumulated per micro-batch by ops::moe_count_experts, and LB,
  // Z, SEQ summed over the step's micro-batches (F32 [3]).
  MoEStepCounters* counters_;
  int64_t counters_index_;
  Tensor routed_counts_E_, kept_counts_E_;
  Tensor aux_step_3_;

  int64_t pairs_ = 0, micro_batches_ = 0;  // the host's part of the step's statistics

  ExpertWeights routed_weights() const;
  ExpertWeights shared_weights(size_t s) const;
};

}  // namespace moe
