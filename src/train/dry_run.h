// The efficiency calculator behind `moe_train CFG --dry-run`: parameter
// counts, FLOPs per token and memory per rank for the configured layout,
// computed from the parameter registry without allocating the model.
#pragma once

#include <cstdint>
#include <string>

#include "src/core/tensor.h"

#include "src/config/derived.h"
#include "src/config/job_config.h"

namespace moe {

struct DryRunReport {
  Layout layout;

  // Parameters (whole model).
  int64_t total_params = 0;
  int64_t embedding_params = 0;  // token embedding (+ LM head when not tied)
  int64_t attention_params = 0;
  int64_t dense_mlp_params = 0;
  int64_t router_params = 0;
  int64_t routed_expert_params = 0;
  int64_t shared_expert_params = 0;
  int64_t norm_params = 0;
  int64_t active_params = 0;  // used by one token: all but the routed experts it skips
  double routed_expert_share = 0;

  // Training FLOPs per token, forward + backward (3x forward), PaLM convention:
  // 6 x (active parameters in matmuls) + 12 x n_layers x (n_heads x head_dim) x seq_len
  // (attention scores and values, no discount for the causal mask).
  int64_t matmul_params_per_token = 0;  // active parameters that multiply (no embedding lookup)
  double matmul_flops_per_token = 0;
  double attention_flops_per_token = 0;
  double flops_per_token = 0;
  int64_t tokens_per_step = 0;  // global: batch_size x seq_len x grad_accum x data-parallel ranks

  // Memory per rank, bytes: every buffer a rank allocates for training, as
  // planned from the config (the sum equals what its TensorPool holds; a test
  // checks it across layouts). FSDP shards every parameter over dp_shard;
  // tensor parallelism splits the tensors marked in the registry; expert
  // parallelism splits the routed experts.
  Choice<Precision> compute_dtype = Precision::kFp32;  // bf16 or fp32: weight copies and activations
  int64_t params_per_rank = 0;
  int64_t master_weight_bytes = 0;  // fp32 master weights
  int64_t compute_copy_bytes = 0;   // the bf16 copy of the master shards (0 in fp32)
  int64_t gradient_bytes = 0;       // fp32 gradient shards
  int64_t optimizer_bytes = 0;      // AdamW first and second moments, fp32
  int64_t fsdp_buffer_bytes = 0;    // FSDP's gather buffers: weights (compute dtype) and fp32 gradients of
                                    // the largest block plus the outer unit, and a reduce-scatter shard
  int64_t activation_bytes = 0;     // activations and their gradients, kept for the whole micro-batch,
                                    // with the MoE buffers sized for the worst routing (capacity or dropless)
  // The masters and compute copies are 4 and 2 bytes per parameter held; the
  // rest (gradients, optimizer, FSDP buffers, activations) and the total are
  // counted from rank 0's state as the trainer builds it
  // (StepRunner::for_planning). Under pipeline parallelism, from the first
  // rank of the stage that holds the most (pp_stage).
  int64_t total_bytes = 0;
  int64_t pp_stage = 0;

  // A GPU's kernel workspace beyond the tensors above: attention's buffer,
  // one for all layers. cuDNN's fused attention (a bf16 run with
  // train.kernels = "auto", on an sm_80 or newer GPU with cuDNN 9) sizes it as
  // its frontend does (kernel_choice.h); the builtin kernel keeps B x H x T
  // fp32 sums. 0 when the run is on the CPU.
  int64_t attention_workspace_bytes = 0;
  std::string attention_kernel;  // the kernel it was sized for
  // Under train.mixed_precision = "fp8": the codes and scales of the largest
  // dense GEMM, one buffer for all of them (ops::fp8_matmul_gpu_bytes).
  int64_t fp8_workspace_bytes = 0;
  int64_t gpu_total_bytes = 0;  // total_bytes + attention_workspace_bytes + fp8_workspace_bytes
};

// `layout` normally comes from resolve_layout(cfg.distributed, world size or
// nothing). Weights and activations are computed in bf16 when
// train.mixed_precision = "bf16" or "fp8" and the run may use a GPU (train.device is
// not "cpu"); the CPU computes in fp32.
DryRunReport estimate_dry_run(const JobConfig& cfg, const Layout& layout);

// The human-readable table printed by --dry-run.
std::string format_dry_run(const DryRunReport& report, const JobConfig& cfg, const std::string& source);

}  // namespace moe
