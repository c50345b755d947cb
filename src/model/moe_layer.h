// The MoE feed-forward of one block:
//   logits = x Wr^T; router picks top-k experts and weights (softmax_topk or
//   sigmoid_topk with a balance bias); the (token, slot) pairs are sorted by
//   expert (capacity drops the overflow in token order); the experts run as
//   grouped matmuls over those rows; out = sum_k weight * expert_k(x) plus
//   the always-on shared experts.
// Auxiliary losses (load balance, router z-loss, sequence balance) are
// computed in forward, their gradient saved and added to the router's in
// backward. Per-step statistics (tokens per expert, drops, aux values) feed
// the metrics, the sigmoid router's bias update and the gradient scaling.
// Under expert parallelism this rank holds El = E/ep experts: it routes its own
// tokens (capacity and aux statistics per micro-batch, as one process does),
// and an ExpertExchange sends the kept rows to the experts' ranks and back.
// Legend: N tokens, D dim, E experts, K top-k, F expert hidden, M kept rows
// routed here, R rows computed by the local experts.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "src/kernels/ops.h"
#include "src/model/ffn.h"
#include "src/model/layer_common.h"
#include "src/model/moe_step_counters.h"
#include "src/parallel/expert_exchange.h"

namespace moe {

// Accumulated over the micro-batches of one optimizer step.
struct MoEStepStats {
  std::vector<int64_t> routed_per_expert;  // pairs that chose each expert, before capacity
  std::vector<int64_t> kept_per_expert;    // pairs each expert computed
  int64_t pairs = 0;
  int64_t dropped = 0;
  double load_balance = 0;  // summed over micro-batches (unweighted)
  double z_loss = 0;
  double sequence_balance = 0;
  int64_t micro_batches = 0;
};

class MoELayer {
 public:
  MoELayer(const LayerContext& ctx, const std::string& prefix);

  // training: count statistics (evaluation must not). grad_scale multiplies the
  // aux losses' gradient (1 / grad_accum_steps). Without expert parallelism
  // nothing here reads a device value on the host: the routing (offsets, kept
  // rows, aux losses, counts) stays where it was computed. With it, the
  // exchange plan reads the offsets (the all-to-all sizes live on the host).
  void forward(const Tensor& out_ND, const Tensor& x_ND, bool training, float grad_scale);
  void backward(const Tensor& dx_ND, const Tensor& dout_ND, const Tensor& x_ND);

  // This rank's statistics of the step so far. The per-expert counts and aux
  // sums accumulate where the routing runs (on the GPU for device tensors), in
  // the model's MoEStepCounters; step_stats() reads them as of the counters'
  // last download(), so call the model's read_moe_step_stats(), which
  // downloads once for all layers. The trainer sums them over the
  // data-parallel group and passes the sums to the two calls below.
  MoEStepStats step_stats() const;
  // The host's part of a training micro-batch's statistics (pairs, micro-batch
  // count), outside forward so that a replayed forward counts too.
  void count_micro_batch();
  // The host's part of a new step's statistics; the model zeroes the device
  // counters of every layer at once (Transformer::reset_moe_step_stats).
  void reset_step_stats();
  // The weighted aux loss of the last forward, w_lb*LB + w_z*Z + w_seq*SEQ (a
  // HOST SYNC; the gradient checks of the tests read it, training does not).
  double last_aux_loss() const;
  // moe_gradient_scale: expert e's weight gradients *= clamp(mean_load / load_e, 0.1, 10),
  // loads = the rows each expert computed over the step (`step`, summed over
  // the data-parallel ranks). Scales the shard gradients of this rank's experts.
  void scale_expert_gradients(const MoEStepStats& step);
  // sigmoid_topk: bias_e += rate * sign(mean_load - load_e), loads = routed
  // pairs over the step (`step`, summed over the data-parallel ranks). The bias
  // is E floats: read, updated and written back (a host sync for device tensors).
  void update_bias(double rate, const MoEStepStats& step);
  const Tensor& bias() const { return bias_E_; }
  const std::string& router_name() const { return router_.spec.name; }  // "...block_sparse_moe.gate.weight"

 private:
  ops::RouterKind kind_;
  int64_t N_, T_, D_, E_, K_, capacity_;
  int64_t local_experts_;  // El: E, or E / ep
  float w_lb_, w_z_, w_seq_;
  Param &router_, &w1_, &w3_, &w2_;
  Param *shared_w1_ = nullptr, *shared_w3_ = nullptr, *shared_w2_ = nullptr;  // [S, ...]; null without shared experts
  Tensor bias_E_;  // sigmoid_topk balance bias: selection only, no gradient, not an optimizer parameter

  // Saved by forward.
  Tensor logits_NE_, scores_NE_, daux_logits_NE_, topk_idx_NK_, topk_w_NK_;
  Tensor offsets_E1_, row_pair_M_, pair_row_NK_;
  Tensor aux_3_;                                    // LB, Z, SEQ of the last forward (F32 [3])
  Tensor xs_MD_, ys_MD_;                            // a row for every pair; the first M (offsets[E]) are the kept ones
  std::unique_ptr<ExpertExchange> exchange_;        // ep > 1 only
  Tensor ex_x_RD_, ex_y_RD_, ex_dx_RD_, ex_dy_RD_;  // the local experts' rows (ep > 1 only)
  GroupedSwiGLU routed_;
  std::vector<std::unique_ptr<GroupedSwiGLU>> shared_;
  Tensor shared_offsets_, shared_out_ND_;
  // Backward scratch.
  Tensor dys_MD_, dxs_MD_, dtopk_w_NK_, dlogits_NE_;
  Tensor dlogits_act_NE_;  // the router gradient in the activation dtype, for its GEMM (bf16 only)
  // The step's counts (I32 [E]), accumulated per micro-batch by
  // ops::moe_count_experts, and LB, Z, SEQ summed over the step's micro-batches
  // (F32 [3]): this layer's views of the model's MoEStepCounters.
  MoEStepCounters* counters_;
  int64_t counters_index_;
  Tensor routed_counts_E_, kept_counts_E_;
  Tensor aux_step_3_;

  int64_t pairs_ = 0, micro_batches_ = 0;  // the host's part of the step's statistics

  ExpertWeights routed_weights() const;
  ExpertWeights shared_weights(size_t s) const;
};

}  // namespace moe
