// The whole model for one micro-batch of B sequences of T tokens:
//   x = embed(tokens); x = block_l(x) for each block; x = RMSNorm(x);
//   loss = mean cross-entropy of x W_head^T against the targets,
// with the LM head and the cross-entropy run chunk by chunk, so that at most
// one chunk of logits (and their gradients, computed in place) exists at a time.
// Every buffer is allocated here, once; a step allocates nothing.
// With FSDP, each block's weights are gathered before its forward and again
// before its backward, and its gradients reduce-scattered right after.
// Under activation checkpointing (saved_activations.h) each block recomputes
// what it did not keep right before its backward.
// Under pipeline parallelism (the parameters' layout has pp > 1) the model is
// this rank's stage: its blocks (stage_blocks), the embedding on the first
// stage, the final norm, head and loss on the last. A stage's input and
// output are activations [B*T, dim] that a schedule (train/pipeline_schedule.h)
// moves between stages; stage_forward() and stage_backward() run one
// micro-batch through it.
#pragma once

#include <memory>
#include <vector>

#include "src/core/stream_graph.h"
#include "src/model/block.h"
#include "src/model/layer_common.h"

namespace moe {

class Transformer {
 public:
  // ce_chunk_rows: rows of logits per LM-head chunk (0 = automatic).
  // parallel: the groups and FSDP units of this rank; it must outlive the model.
  Transformer(const ModelConfig& m, int64_t B, int64_t T, int64_t ce_chunk_rows, TensorPool& pool, ParamStore& params,
              const ModelParallel& parallel = ModelParallel::single_process(),
              ActivationCheckpointing checkpointing = ActivationCheckpointing::kNone,
              DenseGemm dense_gemm = DenseGemm::kActivationDtype);

  // The micro-batch's token ids, [B, T] I32 each, on the model's device:
  // upload() to these, then call a pass.
  const Tensor& inputs() const { return inputs_; }
  const Tensor& targets() const { return targets_; }
  // The noise of the next training pass (router jitter): drawn from the run's
  // seed, the step and the micro-batch's index in one process's numbering
  // (data-parallel rank d's micro-batch m is m x D + d), so that every layout
  // draws the same. Zero until set. An upload: a HOST SYNC on a GPU.
  void set_noise_key(uint64_t seed, int64_t step, int64_t global_micro_batch);

  // Forward and backward: parameter gradients accumulate, scaled so that
  // loss_scale = 1/grad_accum_steps makes a step's gradient the mean over its
  // micro-batches. Returns the mean token cross-entropy: the pass's one HOST
  // SYNC, after the backward has been enqueued, so the device runs the whole
  // pass without waiting for the host.
  double forward_backward(float loss_scale);
  // Forward only (evaluation): no gradients, no MoE statistics. Returns the mean loss.
  double evaluate();
  // From now on, forward_backward() runs its device work as one CUDA graph:
  // the next call runs eagerly (warming the kernels' scratch and GEMM
  // plans), the one after captures, and every later one replays, with the
  // same loss_scale. Token ids are read from inputs()/targets() at replay.
  // Only without collectives inside a micro-batch, on device tensors.
  void replay_micro_batches_as_graph();
  // FSDP, tp > 1, ep > 1 or pp > 1: a micro-batch talks to other ranks (no graph).
  bool micro_batch_has_collectives() const;

  // ---- one pipeline stage (also the whole model when pp = 1) ----
  bool first_stage() const { return embed_ != nullptr; }
  bool last_stage() const { return head_ != nullptr; }
  // Where a later stage's input goes before stage_forward(), and the first
  // stage's embedded tokens after it. [B*T, dim], activation dtype.
  const Tensor& stage_input() const { return resid_.front(); }
  // The stage's output after stage_forward() (what the next stage takes).
  const Tensor& stage_output() const { return resid_.back(); }
  // Where the next stage's gradient of stage_output() goes before
  // stage_backward() (not on the last stage, whose loss gives its own).
  const Tensor& stage_output_grad() const { return dstage_out_; }
  // The gradient of stage_input() after stage_backward() (what the previous stage takes).
  const Tensor& stage_input_grad() const { return stage_input_grad_; }
  // The micro-batch through the stage: the first stage embeds inputs(), the
  // last computes the loss (and, in training, the head's gradients and
  // dfinal). Every gradient of the stage's parameters accumulates in
  // stage_backward(), which needs this micro-batch's stage_forward() just
  // before it (a schedule that runs others in between runs it again).
  void stage_forward(ForwardPass pass, float loss_scale);
  void stage_backward(float loss_scale);
  // The mean token loss of the last stage_forward() on the last stage (a HOST SYNC).
  double read_loss();
  // The weighted MoE auxiliary losses of the last pass, summed over layers
  // (host syncs; for the tests' gradient checks).
  double last_aux_loss();

  const std::vector<MoELayer*>& moe_layers() const { return moe_layers_; }
  // A new optimizer step's MoE statistics: every layer's device counters
  // zeroed at once, and their host parts reset.
  void reset_moe_step_stats();
  // Every MoE layer's statistics of the step so far on this rank (MoELayer::step_stats),
  // in the order of moe_layers(), from one download of all their counters: the
  // step's one HOST SYNC for them.
  std::vector<MoEStepStats> read_moe_step_stats();
  // The block index of each MoE layer, in the order of moe_layers() (the
  // "layer" of the per-layer metrics).
  const std::vector<int64_t>& moe_block_indices() const { return moe_block_indices_; }
  int64_t tokens_per_micro_batch() const { return B_ * T_; }

 private:
  void forward_and_backward(float loss_scale);
  void head_and_loss(bool with_grad, float loss_scale);
  int64_t block_index(size_t local) const { return first_block_ + static_cast<int64_t>(local); }

  const ModelConfig& model_;
  ModelParallel parallel_;
  int64_t B_, T_, N_, D_, V_, chunk_;
  ParamStore& params_;
  int64_t first_block_;                                               // this stage's first block (0 without pp)
  Param *embed_ = nullptr, *final_norm_ = nullptr, *head_ = nullptr;  // first / last stage only
  SharedScratch scratch_;                                             // before blocks_: the layers hold its buffers
  SavedActivations saved_;                                            // the same
  std::unique_ptr<MoEStepCounters> moe_counters_;                     // null without MoE layers
  std::vector<std::unique_ptr<Block>> blocks_;
  std::vector<MoELayer*> moe_layers_;  // the MoE layers of blocks_, in order
  std::vector<int64_t> moe_block_indices_;
  Tensor inputs_, targets_, noise_key_;
  std::vector<Tensor> resid_;  // resid_[l] is the stage's block l's input; resid_.back() the last block's output
  Tensor final_out_, final_rstd_, logits_, loss_n_;
  std::vector<float> loss_host_;        // loss_n_ read back
  std::unique_ptr<StreamGraph> graph_;  // set by replay_micro_batches_as_graph()
  bool graph_warm_ = false;
  float graph_scale_ = 0;
  Tensor dfinal_, dresid_a_, dresid_b_;
  Tensor dstage_out_;        // not on the last stage
  Tensor stage_input_grad_;  // one of the buffers above, after stage_backward()
};

}  // namespace moe
