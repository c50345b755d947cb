// JobConfig: everything a training job is told, one struct per TOML section.
//
// Section and key names follow KempnerForge's configs so that its users' files
// load unchanged where the keys apply; defaults are KempnerForge's unless a
// comment gives the reason for ours. Which keys exist and their types are
// declared once, in schema.cc; the allowed values of the keys with a fixed set
// are enums, in enums.h; the rules that tie keys together are in validate.cc.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "src/config/enums.h"

namespace moe {

struct ModelConfig {
  int64_t dim = 4096;
  int64_t n_layers = 32;
  int64_t n_heads = 32;
  std::optional<int64_t> n_kv_heads;  // unset: n_heads (multi-head attention)
  int64_t vocab_size = 32000;
  double ffn_dim_multiplier = 1.0;
  std::optional<int64_t> ffn_hidden_dim;  // unset: 256*ceil(int(4*dim*2/3*ffn_dim_multiplier)/256)
  Choice<NormType> norm_type = NormType::kRmsNorm;
  Choice<Activation> activation = Activation::kSilu;
  bool qk_norm = false;
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  int64_t max_seq_len = 2048;
  bool tie_embeddings = false;
  double init_std = 0.02;
  Choice<ModelType> model_type = ModelType::kTransformer;

  // Mixture of experts. num_experts = 0 is a dense model.
  int64_t num_experts = 0;
  int64_t moe_top_k = 2;
  std::string moe_router = "softmax_topk";  // softmax_topk (Mixtral), sigmoid_topk (DeepSeek-V3), noisy_topk (Shazeer)
  int64_t moe_frequency = 1;                // block i is MoE when (i+1) % moe_frequency == 0
  double moe_aux_loss_weight = 0.01;
  double moe_router_z_loss_weight = 0.0;
  double moe_sequence_aux_loss_weight = 0.0;
  double moe_capacity_factor = 0.0;  // 0: no capacity limit (dropless)
  // The capacity factor of evaluation (DeepSpeed's eval_capacity_factor);
  // -1: the training one.
  double moe_eval_capacity_factor = -1.0;
  bool moe_drop_tokens = true;  // false: dropless whatever the capacity factors (DeepSpeed's drop_tokens)
  // Switch's multiplicative router jitter (Megatron's moe_input_jitter_eps): in
  // training the router sees x * u, u uniform in (1 - eps, 1 + eps) per element; 0: off.
  double moe_router_jitter = 0.0;
  // Dropout inside the routed experts (Switch's expert dropout): in training
  // each expert's hidden activation silu(x W1) * (x W3) is zeroed with this
  // probability and the rest scaled by 1 / (1 - p); 0: off.
  double moe_expert_dropout = 0.0;
  int64_t moe_shared_experts = 0;
  // Ours: true. Experts are always stored packed ([E, dim, hidden]) and run as
  // one grouped matmul; `false` is accepted for KempnerForge files and changes
  // nothing numerically (HF export still names each expert).
  bool moe_packed_experts = true;
  bool moe_gradient_scale = false;
  double moe_expert_ffn_multiplier = 1.0;
  double moe_bias_update_rate = 1e-3;  // DeepSeek-V3's gamma
  Choice<BiasSchedule> moe_bias_schedule = BiasSchedule::kConstant;
};

struct TrainConfig {
  int64_t batch_size = 8;  // micro-batch per data-parallel rank
  int64_t seq_len = 2048;
  int64_t max_steps = 100000;
  int64_t grad_accum_steps = 1;
  double grad_clip_norm = 1.0;
  int64_t seed = 42;
  Choice<Precision> mixed_precision = Precision::kBf16;
  Choice<ActivationCheckpointing> activation_checkpointing = ActivationCheckpointing::kNone;
  int64_t ce_chunk_size = 0;                        // tokens per cross-entropy chunk; 0 = auto
  Choice<TrainDevice> device = TrainDevice::kAuto;  // ours
  // Numerical faults (ours): a non-finite loss or gradient norm either skips
  // the update ("skip") or ends the run ("abort"). More than max_skipped skipped or
  // spiking steps in a row end it as diverged (src/train/divergence.h).
  Choice<NanPolicy> nan_policy = NanPolicy::kSkip;
  int64_t max_skipped = 5;
  double spike_factor = 3.0;  // a loss above this times the healthy running mean is a spike; 0 = off
  // GPU kernels (ours): "auto" runs a vendor library's kernel where one
  // applies (cuDNN's fused attention), "builtin" the project's own everywhere.
  Choice<TrainKernels> kernels = TrainKernels::kAuto;
  // Vendor kernels must be bitwise deterministic (cuDNN's deterministic
  // attention backward), as the builtin ones are: bit-exact resume and graph
  // replay need it. false allows faster non-deterministic ones.
  bool deterministic = true;
};

struct OptimizerConfig {
  Choice<OptimizerType> name = OptimizerType::kAdamW;
  double lr = 3e-4;
  double weight_decay = 0.1;
  std::array<double, 2> betas = {0.9, 0.95};
  double eps = 1e-8;
};

struct SchedulerConfig {
  Choice<LrSchedule> name = LrSchedule::kCosine;
  int64_t warmup_steps = 2000;
  std::optional<int64_t> decay_steps;  // unset: decay over the steps left after warm-up
  double min_lr_ratio = 0.1;
  std::optional<int64_t> stable_steps;  // wsd only; unset: stable until the last decay_steps
};

struct DistributedConfig {
  int64_t dp_replicate = 1;
  int64_t dp_shard = -1;  // -1: whatever the world size leaves
  int64_t tp = 1;
  int64_t ep = 1;
  int64_t pp = 1;
  int64_t cp = 1;
  int64_t nccl_timeout_sec = 1800;
  // ours: the network --dry-run plans the collectives' time on (alpha-beta:
  // a collective of S bytes over p ranks takes latency + (p-1)/p x S / bandwidth,
  // twice that for an all-reduce). Defaults: H100 SXM nodes of 8 GPUs, NVLink
  // and one 400 Gb/s InfiniBand NIC per GPU, at NCCL's measured bus bandwidths.
  int64_t gpus_per_node = 8;
  double intra_node_gb_s = 360;
  double inter_node_gb_s = 45;
  double intra_node_latency_us = 10;
  double inter_node_latency_us = 20;
};

struct DataConfig {
  std::string dataset_path;
  std::string file_pattern = "*.npy";
};

struct EvalConfig {
  bool enabled = false;
  int64_t interval = 1000;
  int64_t steps = 50;
  std::string dataset_path;
  std::string file_pattern = "*.npy";
};

struct CheckpointConfig {
  std::string dir = "checkpoints";
  int64_t interval = 1000;
  int64_t keep_last_n = 3;        // <= 0 keeps all
  std::string load_path;          // a step folder, or a checkpoint folder (its `latest`), to start from
  std::string initial_load_path;  // a new run's weights: those this checkpoint shares with the model, by name
  Choice<ResumePolicy> resume = ResumePolicy::kAuto;  // auto: continue from <dir>/latest when it exists
};

struct MetricsConfig {
  int64_t log_interval = 10;
  // ours: one JSON object per logged step, in jsonl_path (empty: metrics.jsonl
  // in checkpoint.dir, the run's folder); enable_jsonl = false writes none.
  bool enable_jsonl = true;
  std::string jsonl_path;
  bool enable_tensorboard = false;  // KempnerForge's keys: event files in tensorboard_dir
  std::string tensorboard_dir = "tb_logs";
  bool enable_wandb = false;  // accepted for KempnerForge configs: W&B is not supported (one warning)
  // ours: the peak (TFLOP/s per rank) MFU is divided by; 0 = the GPU's bf16
  // spec, or the CPU's sgemm rate measured once per machine
  double peak_tflops = 0;
  double planned_mfu = 0.4;  // ours: the MFU --dry-run plans the compute time at
};

struct JobConfig {
  ModelConfig model;
  TrainConfig train;
  OptimizerConfig optimizer;
  SchedulerConfig scheduler;
  DistributedConfig distributed;
  DataConfig data;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  MetricsConfig metrics;
};

}  // namespace moe
