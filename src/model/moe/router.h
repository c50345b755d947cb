// The router of an MoE block (Megatron's TopKRouter role): from the tokens x
// it computes the gate's logits (x Wr^T, fp32), picks each token's K experts
// and their weights, and in training the auxiliary losses (load balance,
// router z-loss, sequence balance) whose gradient it adds in backward.
//
// What differs between routers is the selection: how scores, the top-k and
// the weights come from the logits, their gradient, what (if anything) the
// router learns from a step's token counts, and what it may add to the
// logits in training (noisy gating). A router is a subclass that says those;
// the gate GEMM, the input jitter, the aux losses and the backward of the GEMM
// are here, shared. To add one: a file in this folder with the subclass and
// its factory, and one line in routers.cc (see routers.h).
// Legend: N tokens, D dim, E experts, K top-k.
#pragma once

#include <cstdint>

#include "src/config/job_config.h"
#include "src/core/tensor_pool.h"
#include "src/kernels/ops.h"
#include "src/model/moe/moe_step_stats.h"
#include "src/model/params.h"
#include "src/model/saved_activations.h"
#include "src/model/shared_scratch.h"

namespace moe {

// What a router is built with.
struct RouterSetup {
  const ModelConfig& model;
  Param& gate;              // [E, D]
  int64_t N, T;             // tokens routed per call, as sequences of T (the sequence balance loss)
  TensorPool& pool;         // its buffers, on the device the routing runs on
  SharedScratch& scratch;   // backward buffers shared with every other router
  SavedActivations& saved;  // the routing and the aux gradient, kept for backward
  DType act;                // the dtype of x and dx (bf16 under mixed precision); the routing is fp32
  const Tensor& noise_key;  // the micro-batch's noise key (ops::multiply_noise): jitter and noisy gating draw from it
  ParamStore& params;       // where a router finds the weights it learns beside its gate (router_extra_weights)
  int64_t layer;            // the block index: the router's own noise streams
  // Generation: one token at a time, no batch for experts to choose from;
  // every router then gives each token moe_top_k experts.
  bool decoding = false;
};

class Router {
 public:
  explicit Router(const RouterSetup& setup);
  virtual ~Router() = default;
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Routes x_ND: topk_idx() and topk_w(). In training the router sees x_ND
  // times its jitter (moe_router_jitter), and computes the aux losses,
  // left on the device in aux_losses() with their gradient saved for backward
  // (grad_scale multiplies it: 1 / grad_accum_steps); evaluation and
  // generation, which never run backward, skip them.
  void forward(const Tensor& x_ND, bool training, float grad_scale);
  // dx_ND += the router's input gradient and gate.grad = its weight gradient,
  // from dtopk_w_NK (d loss / d weights) and the saved aux gradient.
  void backward(const Tensor& dx_ND, const Tensor& dtopk_w_NK, const Tensor& x_ND);

  // K = moe_slots (num_experts when the experts choose), moe_top_k in decoding.
  const Tensor& topk_idx() const { return topk_idx_NK_; }  // I32 [N, K], distinct experts per token
  const Tensor& topk_w() const { return topk_w_NK_; }      // F32 [N, K]
  // Which pairs an expert keeps when more reach it than its capacity: empty,
  // its first ones in token order; else F32 [N, K], those of highest value.
  virtual Tensor capacity_priority() const { return Tensor{}; }
  // F32 [3], unweighted: load balance, z-loss, sequence balance of the last training forward.
  const Tensor& aux_losses() const { return aux_3_; }
  // w_lb * LB + w_z * Z + w_seq * SEQ of the last training forward (a HOST SYNC).
  double last_weighted_aux_loss() const;

  // Once per optimizer step, after the optimizer: `step` holds the step's
  // statistics summed over the data-parallel ranks; `bias_rate` is the
  // balance-bias rate of this step (moe_bias_update_rate under its schedule).
  virtual void end_step(const MoEStepStats& step, double bias_rate);
  // The selection bias: E floats added to the scores for the choice only
  // (zero and unused unless the router learns one). Checkpoints keep it.
  const Tensor& bias() const { return bias_E_; }

 protected:
  // scores_NE_, topk_idx_NK_ and topk_w_NK_ from logits_NE_ (fp32, on the routing's device).
  virtual void select() = 0;
  // dlogits_NE += d(topk_w)/d(logits)^T dtopk_w_NK, for the last select().
  virtual void select_backward(const Tensor& dlogits_NE, const Tensor& dtopk_w_NK) = 0;
  // Which normalised scores the balance losses use: softmax probabilities, or
  // sigmoid scores over their row sum.
  virtual ops::RouterKind balance_scores() const = 0;
  // In training only, before select(): what the router adds to logits_NE_ =
  // input Wr^T (noisy_topk: its learned noise); the input is x, jittered where
  // that is on. And its backward, right after the gate's: from dlogits_NE
  // (F32, d loss / d logits) its own weights' gradients, and dinput_ND += the
  // input's gradient through them. By default nothing.
  virtual void add_to_logits(const Tensor& /*input_ND*/) {}
  virtual void add_to_logits_backward(const Tensor& /*dinput_ND*/, const Tensor& /*dlogits_NE*/,
                                      const Tensor& /*input_ND*/) {}

  // The router's math is fp32; its GEMMs take a gradient in the activation
  // dtype: grad_f32 itself, or (bf16) act_copy after a cast into it.
  static Tensor for_gemm(const Tensor& grad_f32, const Tensor& act_copy);

  int64_t N_, T_, E_, K_;
  Tensor logits_NE_, scores_NE_, topk_idx_NK_, topk_w_NK_;
  Tensor bias_E_;

 private:
  Param& gate_;
  float w_lb_, w_z_, w_seq_;
  Tensor aux_3_, daux_logits_NE_;
  Tensor dlogits_NE_;      // backward scratch (F32)
  Tensor dlogits_act_NE_;  // the same in the activation dtype, for the GEMM (bf16 only)
  // Jitter: x times uniform(1 - eps, 1 + eps), drawn again in backward rather
  // than kept (shared scratch, unused without jitter).
  const Tensor& noise_key_;
  uint64_t jitter_stream_;
  noise::Distribution jitter_;
  Tensor jittered_x_ND_, djittered_x_ND_;

  // The router's input in training: x itself, or x times the jitter.
  const Tensor& input(const Tensor& x_ND, bool training);
};

}  // namespace moe
