#include "src/train/step_runner.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "src/core/cuda_device.h"
#include "src/core/user_error.h"
#include "src/kernels/kernel_choice.h"
#include "src/kernels/ops.h"
#include "src/model/param_names.h"
#include "src/parallel/launch_env.h"
#include "src/train/lr_schedule.h"
#include "src/train/moe_gradient_scale.h"
#include "src/train/moe_metrics.h"

namespace moe {
namespace {

std::unique_ptr<Fsdp> make_fsdp(ParamStore& params, Mesh& mesh, TensorPool& pool) {
  if (mesh.layout().dp_shard == 1) return nullptr;
  return std::make_unique<Fsdp>(params, mesh.dp_shard(), pool);
}

// The placement, with this rank's GPU selected before anything is allocated on it.
Placement select_placement(const TrainConfig& t, std::optional<Placement> forced) {
  Placement p = forced ? *forced : placement_of(t);
  if (p.device != Device::kCuda) return p;
  kernels::configure(kernel_settings_of(t));
  // With several ranks the mesh's groups must move device tensors (NCCL,
  // HostDeviceCommunicator: the trainer's make_world), and the trainer has
  // already selected this GPU (NCCL binds to it); selecting again is a no-op.
  // A forced placement may name the GPU (check-gpu checks each in turn).
  p.gpu = select_cuda_device(forced && forced->gpu >= 0 ? forced->gpu : read_launch_env().local_rank);
  const int sm = cuda_compute_capability(p.gpu);
  if (t.mixed_precision == Precision::kFp8 && sm < 89) {
    throw UserError(fmt::format(
        "train.mixed_precision = \"fp8\": GPU {} ({}) has no FP8 tensor cores (compute capability {}.{}; FP8 needs "
        "8.9 or newer: Ada, Hopper and later); use \"bf16\" on this GPU",
        p.gpu, cuda_device_description(p.gpu), sm / 10, sm % 10));
  }
  return p;
}

}  // namespace

StepRunner::StepRunner(const JobConfig& cfg, Mesh& mesh, std::optional<Placement> placement)
    : StepRunner(cfg, mesh, select_placement(cfg.train, placement), TensorPool::Backing::kMemory) {
  params_.init(cfg.model, static_cast<uint64_t>(cfg.train.seed));
  // On one GPU (no collective inside a micro-batch) each micro-batch's
  // forward and backward replay as one CUDA graph: no launch per kernel.
  if (placement_.device == Device::kCuda && !model_.micro_batch_has_collectives()) {
    model_.replay_micro_batches_as_graph();
  }
}

std::unique_ptr<StepRunner> StepRunner::for_planning(const JobConfig& cfg, Mesh& mesh, DType compute) {
  // Every part allocates the same on either device.
  const Placement host{Device::kCpu, compute, -1};
  return std::unique_ptr<StepRunner>(new StepRunner(cfg, mesh, host, TensorPool::Backing::kAddressSpace));
}

StepRunner::StepRunner(const JobConfig& cfg, Mesh& mesh, Placement placement, TensorPool::Backing backing)
    : cfg_(cfg),
      mesh_(mesh),
      placement_(placement),
      pool_(placement_.device, backing),
      params_(cfg.model, pool_, mesh.layout(), mesh.coord(), placement_.compute),
      fsdp_(make_fsdp(params_, mesh, pool_)),
      parallel_{&mesh.tp(), &mesh.ep(), fsdp_.get()},
      model_(cfg.model, cfg.train.batch_size, cfg.train.seq_len, cfg.train.ce_chunk_size, pool_, params_, parallel_,
             cfg.train.activation_checkpointing,
             cfg.train.mixed_precision == Precision::kFp8 ? DenseGemm::kFp8 : DenseGemm::kActivationDtype),
      pipeline_(mesh.layout().pp > 1
                    ? std::make_unique<PipelineSchedule>(model_, mesh.pp(), pool_, cfg.train.grad_accum_steps)
                    : nullptr),
      optimizer_(cfg.optimizer, params_, pool_),
      moe_layers_(model_.moe_layers()),
      inputs_host_(static_cast<size_t>(model_.tokens_per_micro_batch())),
      targets_host_(static_cast<size_t>(model_.tokens_per_micro_batch())) {}

StepRunner::Allocations StepRunner::allocations() const {
  return {after_params_, after_fsdp_ - after_params_, after_model_ - after_fsdp_,
          pool_.bytes_requested() - after_model_};
}

void StepRunner::load_batch(const BatchSampler& sampler, int64_t step_index, int64_t micro, int64_t micros) {
  Communicator& dp = mesh_.data_parallel();
  sampler.fill(step_index, micro, micros, dp.rank(), dp.size(), inputs_host_.data(), targets_host_.data());
  upload(model_.inputs(), inputs_host_.data());
  upload(model_.targets(), targets_host_.data());
}

void StepRunner::read_step_tokens(int64_t step, const BatchSampler& sampler) {
  const int64_t micros = cfg_.train.grad_accum_steps, tokens = model_.tokens_per_micro_batch();
  Communicator& dp = mesh_.data_parallel();
  step_inputs_.resize(static_cast<size_t>(micros * tokens));
  step_targets_.resize(static_cast<size_t>(micros * tokens));
  step_tokens_read_ = -1;
  for (int64_t micro = 0; micro < micros; ++micro) {
    sampler.fill(step - 1, micro, micros, dp.rank(), dp.size(), step_inputs_.data() + micro * tokens,
                 step_targets_.data() + micro * tokens);
  }
  step_tokens_read_ = step;
}

StepMetrics StepRunner::step(int64_t step, const BatchSampler& sampler) {
  const TrainConfig& t = cfg_.train;
  Communicator& dp = mesh_.data_parallel();
  params_.zero_grads();
  model_.reset_moe_step_stats();

  if (step_tokens_read_ != step) read_step_tokens(step, sampler);
  step_tokens_read_ = -1;
  const float loss_scale = 1.0f / static_cast<float>(t.grad_accum_steps);
  double loss = 0;
  if (pipeline_) {
    // The last stage has the loss; the pipeline's other stages add 0.
    loss = pipeline_->train([&](int64_t micro) { load_micro_batch(step, micro); }, loss_scale);
    loss = all_reduce_value(mesh_.pp(), loss / static_cast<double>(t.grad_accum_steps), ReduceOp::kSum);
  } else {
    for (int64_t micro = 0; micro < t.grad_accum_steps; ++micro) {
      load_micro_batch(step, micro);
      loss += model_.forward_backward(loss_scale) / static_cast<double>(t.grad_accum_steps);
    }
  }
  loss = all_reduce_value(dp, loss, ReduceOp::kAvg);
  if (step == nan_step_) {
    const float nan = NAN;
    const Tensor& g = params_.all().front().shard_grad;
    upload(g.reshaped({g.numel()}).rows(0, 1), &nan);
  }
  reduce_gradients();
  const std::vector<MoEStepStats> moe_stats = sum_over_ranks(dp, model_.read_moe_step_stats());
  if (cfg_.model.moe_gradient_scale) {
    for (size_t i = 0; i < moe_layers_.size(); ++i)
      scale_expert_gradients(params_, moe_layers_[i]->layer(), moe_stats[i]);
  }

  StepMetrics m;
  m.step = step;
  m.max_steps = t.max_steps;
  m.loss = loss;
  m.grad_norm = optimizer_.grad_norm(mesh_.world());
  m.lr = cfg_.optimizer.lr * lr_factor(cfg_.scheduler, t.max_steps, step);
  add_moe_metrics(m, moe_stats, model_.moe_block_indices());
  if (!std::isfinite(m.loss) || !std::isfinite(m.grad_norm)) {
    m.skipped = true;  // the parameters, moments and biases stay as they were
    return m;
  }
  optimizer_.step(m.lr, clip_scale(m.grad_norm, t.grad_clip_norm), step);
  const double bias_rate = bias_update_rate(cfg_.model, t.max_steps, step);
  for (size_t i = 0; i < moe_layers_.size(); ++i) moe_layers_[i]->router().end_step(moe_stats[i], bias_rate);
  return m;
}

void StepRunner::load_micro_batch(int64_t step, int64_t micro) {
  const int64_t tokens = model_.tokens_per_micro_batch();
  Communicator& dp = mesh_.data_parallel();
  upload(model_.inputs(), step_inputs_.data() + micro * tokens);
  upload(model_.targets(), step_targets_.data() + micro * tokens);
  model_.set_noise_key(static_cast<uint64_t>(cfg_.train.seed), step, micro * dp.size() + dp.rank());
}

void StepRunner::reduce_gradients() {
  const int64_t D = mesh_.data_parallel().size();
  if (D == 1) return;
  // Each rank's gradients are of its own mean loss; the step's loss is the
  // mean over the D data-parallel ranks. A shard's replicas hold the same rows:
  // an expert's across dp_replicate, a non-expert parameter's across
  // dp_replicate x ep. (Expert gradients already hold every EP rank's tokens,
  // through the all-to-all, so they too are divided by D.)
  // Each group's all-reduces go out as one batch (one NCCL launch).
  for (bool experts : {true, false}) {
    Communicator& replicas = experts ? mesh_.dp_replicate() : mesh_.non_expert_replicas();
    if (replicas.size() == 1) continue;
    CollectiveBatch batch(replicas);
    for (Param& p : params_.all()) {
      if (p.spec.expert_parallel == experts) replicas.all_reduce(p.shard_grad, ReduceOp::kSum);
    }
  }
  const float inv_d = 1.0f / static_cast<float>(D);
  for (Param& p : params_.all()) ops::scale_inplace(p.shard_grad, inv_d);
}

double StepRunner::evaluate(const BatchSampler& sampler, int64_t steps) {
  Communicator& dp = mesh_.data_parallel();
  double loss = 0;
  if (pipeline_) {
    loss = pipeline_->evaluate([&](int64_t i) { load_batch(sampler, i, 0, 1); }, steps) / static_cast<double>(steps);
    loss = all_reduce_value(mesh_.pp(), loss, ReduceOp::kSum);
  } else {
    for (int64_t i = 0; i < steps; ++i) {
      load_batch(sampler, i, 0, 1);
      loss += model_.evaluate() / static_cast<double>(steps);
    }
  }
  return all_reduce_value(dp, loss, ReduceOp::kAvg);
}

std::vector<StateTensor> StepRunner::state_tensors() {
  const MeshCoord& c = mesh_.coord();
  std::vector<StateTensor> out;
  auto& params = params_.all();
  for (size_t i = 0; i < params.size(); ++i) {
    const Param& p = params[i];
    const bool writes = counted_here(p, c);  // one replica of each shard writes it
    out.push_back({p.spec.name, p.place, p.shard, writes});
    out.push_back({p.spec.name + ".exp_avg", p.place, optimizer_.exp_avg(i), writes});
    out.push_back({p.spec.name + ".exp_avg_sq", p.place, optimizer_.exp_avg_sq(i), writes});
  }
  // Under pipeline parallelism, the other stages' tensors too, with no piece
  // here: a checkpoint holds the whole model whichever rank writes it, and a
  // stage loads its own.
  if (mesh_.layout().pp > 1) {
    for (const ParamSpec& spec : model_param_specs(cfg_.model)) {
      if (on_pipeline_stage(spec, cfg_.model, mesh_.layout().pp, c.pp)) continue;
      const ParamPlacement place = place_parameter(spec.shape, spec.tp_dim, spec.expert_parallel, mesh_.layout(), c);
      for (const char* suffix : {"", ".exp_avg", ".exp_avg_sq"})
        out.push_back({spec.name + suffix, place, Tensor{}, false});
    }
  }
  // The routers' selection biases: replicated on every rank, written by rank 0.
  for (MoELayer* layer : moe_layers_) {
    const Tensor& bias = layer->router().bias();
    const ParamPlacement whole = place_parameter({bias.numel()}, -1, false, Layout{}, MeshCoord{});
    out.push_back({param_name::router_bias(layer->layer()), whole, bias, mesh_.world().rank() == 0});
  }
  return out;
}

TrainPosition StepRunner::load_checkpoint(const std::string& path) {
  const TrainPosition at = moe::load_checkpoint(path, state_tensors());
  params_.refresh_compute_copies();
  return at;
}

TrainPosition StepRunner::load_initial_weights(const std::string& path) {
  const TrainPosition at = moe::load_checkpoint(path, state_tensors(), LoadScope::kInitialWeights);
  params_.refresh_compute_copies();
  return at;
}

int64_t StepRunner::persistent_state_bytes() const {
  int64_t bytes = 0;
  for (const Param& p : params_.all()) {
    bytes += 4 * p.shard.bytes();  // master, grad, AdamW m and v
    if (p.shard_compute.data != p.shard.data) bytes += p.shard_compute.bytes();
  }
  return bytes;
}

}  // namespace moe
