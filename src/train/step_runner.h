// One rank's share of training: its part of the model (placed by the mesh's
// layout), the FSDP units, the optimizer, and the step that ties them:
//   micro-batches (this rank's slice of the global batch, see below)
//   -> gradients summed over the replicas of each shard and divided by the
//      data-parallel degree D (FSDP has already reduce-scattered over dp_shard)
//   -> MoE statistics summed over the data-parallel group
//   -> expert gradient scaling, global-norm clipping, AdamW on the local
//      shards, the sigmoid router's bias update.
// Data rule: data-parallel rank d (of D = dp_replicate x dp_shard x ep) reads
// micro-batch m of a step as global micro-batch m*D + d; so one process with
// grad_accum_steps x D reads the same global batch, and computes the same
// numbers (BatchSampler orders samples by (step, micro, rank)). TP ranks of a
// group read the same data. The trainer loop and the layout tests drive this.
#pragma once

#include <memory>
#include <optional>
#include <stdexcept>
#include <vector>

#include "src/config/job_config.h"
#include "src/core/tensor_pool.h"
#include "src/data/batch_sampler.h"
#include "src/model/fsdp.h"
#include "src/model/params.h"
#include "src/model/transformer.h"
#include "src/parallel/mesh.h"
#include "src/checkpoint/checkpoint.h"
#include "src/train/metrics.h"
#include "src/train/optimizer.h"
#include "src/train/pipeline_schedule.h"
#include "src/train/placement.h"
#include "src/checkpoint/state_tensor.h"

namespace moe {

class StepRunner {
 public:
  // Builds and initialises this rank's parameters (the same global values at
  // any layout) on the configured device; for a GPU, selects it by local rank
  // first. `placement` overrides the config's: the tests run the bf16 path on
  // the CPU with it (ops.h widens bf16 host tensors for the fp32 reference).
  StepRunner(const JobConfig& cfg, Mesh& mesh, std::optional<Placement> placement = std::nullopt);

  // What --dry-run counts: this rank's training state built as training
  // builds it, in address space only (TensorPool::Backing::kAddressSpace), on
  // the host in `compute` (the dtype the configured device computes in), with
  // nothing initialised, run or sent (a planning mesh, Mesh::for_planning,
  // will do).
  static std::unique_ptr<StepRunner> for_planning(const JobConfig& cfg, Mesh& mesh, DType compute);

  // What the pool holds, by the part that asked for it.
  struct Allocations {
    int64_t params = 0;     // parameter shards, their compute copies and gradients
    int64_t fsdp = 0;       // FSDP's gather buffers
    int64_t model = 0;      // activations and the layers' scratch, for one micro-batch
    int64_t optimizer = 0;  // AdamW's moments
  };
  Allocations allocations() const;

  // One optimizer step (1-based). Fills loss, lr, grad_norm and the MoE
  // metrics, all global (the same on every rank). A non-finite loss or
  // gradient norm (seen by every rank at the same step, as both are global)
  // skips the update (metrics.skipped): nothing changes. Whether the run goes
  // on is the trainer's call (train.nan_policy, divergence.h).
  StepMetrics step(int64_t step, const BatchSampler& sampler);

  // Reads the tokens of every micro-batch of `step` into host memory, for
  // step() to use. Done apart from the step so that a data error (a file
  // changed under the run, an id outside the vocabulary) shows before the step
  // changes anything: the trainer can then stop every rank together, after
  // saving the last finished step. step() reads them itself when not done.
  void read_step_tokens(int64_t step, const BatchSampler& sampler);

  // Test hook: at `step`, one gradient element of this rank becomes NaN
  // after the backward pass (as an overflow would make it).
  void inject_nan_gradient_at(int64_t step) { nan_step_ = step; }
  // Mean loss over `steps` global eval batches (each data-parallel rank its slice).
  double evaluate(const BatchSampler& sampler, int64_t steps);

  ParamStore& params() { return params_; }
  Transformer& model() { return model_; }
  const Placement& placement() const { return placement_; }
  // Everything this rank allocated for training (what --dry-run plans).
  const TensorPool& pool() const { return pool_; }
  // Everything a checkpoint needs to continue this run exactly: parameter
  // shards ("<name>"), AdamW moments ("<name>.exp_avg", "<name>.exp_avg_sq")
  // and the sigmoid routers' balance biases ("...gate.e_score_correction_bias",
  // DeepSeek-V3's name). The pieces are views of the live tensors.
  std::vector<StateTensor> state_tensors();
  // Loads state_tensors() from a checkpoint (a step folder, or a dir with
  // `latest`) and refreshes the compute copies of the weights.
  TrainPosition load_checkpoint(const std::string& path);
  // A new run's weights from a checkpoint of another model: those it shares
  // with this one by name (LoadScope::kInitialWeights); the rest keep their
  // initial values.
  TrainPosition load_initial_weights(const std::string& path);
  // Bytes this rank keeps for the whole run: parameter shards, their
  // gradients and AdamW moments (the activations and FSDP buffers are extra).
  int64_t persistent_state_bytes() const;

 private:
  void reduce_gradients();
  // Micro-batch `micro` of the step's tokens into the model, with its noise key.
  void load_micro_batch(int64_t step, int64_t micro);
  // The sampler's token ids for (step, micro) into the model's input tensors.
  void load_batch(const BatchSampler& sampler, int64_t step_index, int64_t micro, int64_t micros);

  StepRunner(const JobConfig& cfg, Mesh& mesh, Placement placement, TensorPool::Backing backing);

  const JobConfig& cfg_;
  Mesh& mesh_;
  Placement placement_;
  TensorPool pool_;
  // The pool's count after each part is built (allocations()): they are
  // built in this order.
  ParamStore params_;
  int64_t after_params_ = pool_.bytes_requested();
  std::unique_ptr<Fsdp> fsdp_;
  int64_t after_fsdp_ = pool_.bytes_requested();
  ModelParallel parallel_;
  Transformer model_;
  std::unique_ptr<PipelineSchedule> pipeline_;  // pp > 1: this rank is one stage
  int64_t after_model_ = pool_.bytes_requested();
  Optimizer optimizer_;
  std::vector<MoELayer*> moe_layers_;
  std::vector<int32_t> inputs_host_, targets_host_;  // staging for the token ids (one micro-batch)
  std::vector<int32_t> step_inputs_, step_targets_;  // every micro-batch of step step_tokens_read_
  int64_t step_tokens_read_ = -1;
  int64_t nan_step_ = -1;
};

}  // namespace moe
