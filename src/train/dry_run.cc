#include "src/train/dry_run.h"

#include <algorithm>
#include <array>
#include <vector>

#include <fmt/format.h>

#include "src/config/derived.h"
#include "src/config/router_names.h"
#include "src/core/user_error.h"
#include "src/kernels/kernel_choice.h"
#include "src/kernels/ops.h"
#include "src/model/param_spec.h"
#include "src/parallel/mesh.h"
#include "src/parallel/param_sharding.h"
#include "src/train/comm_plan.h"
#include "src/train/placement.h"
#include "src/train/step_runner.h"

namespace moe {
namespace {

// The local size of dim 0 of a block-0 parameter under the layout (tp cuts heads and columns).
int64_t local_rows_of(const ModelConfig& m, const std::string& name, const Layout& layout) {
  for (const ParamSpec& p : model_param_specs(m)) {
    if (p.name == name)
      return place_parameter(p.shape, p.tp_dim, p.expert_parallel, layout, MeshCoord{}).local_shape[0];
  }
  return 0;
}

// This rank's query and KV heads (tp splits both).
struct LocalHeads {
  int64_t H, G;
};
LocalHeads local_heads(const ModelConfig& m, const Layout& layout) {
  const int64_t Dh = head_dim(m);
  return {local_rows_of(m, "model.layers.0.self_attn.q_proj.weight", layout) / Dh,
          local_rows_of(m, "model.layers.0.self_attn.k_proj.weight", layout) / Dh};
}

}  // namespace

DryRunReport estimate_dry_run(const JobConfig& cfg, const Layout& layout) {
  const ModelConfig& m = cfg.model;
  DryRunReport r;
  r.layout = layout;
  const bool bf16 = cfg.train.mixed_precision != Precision::kFp32 && cfg.train.device != TrainDevice::kCpu;
  r.compute_dtype = bf16 ? Precision::kBf16 : Precision::kFp32;
  // What training allocates, counted: the state of the first rank of each
  // pipeline stage (rank 0 without pp) built by the trainer's own
  // constructors, in address space only; the stage that holds the most.
  StepRunner::Allocations built;
  for (int64_t stage = 0; stage < layout.pp; ++stage) {
    MeshCoord first_rank;
    first_rank.pp = stage;
    Mesh mesh = Mesh::for_planning(layout, mesh_rank(layout, first_rank));
    const StepRunner::Allocations a =
        StepRunner::for_planning(cfg, mesh, bf16 ? DType::kBF16 : DType::kF32)->allocations();
    if (stage == 0 ||
        a.params + a.fsdp + a.model + a.optimizer > built.params + built.fsdp + built.model + built.optimizer) {
      built = a;
      r.pp_stage = stage;
    }
  }

  int64_t skipped_expert_params = 0;
  for (const ParamSpec& p : model_param_specs(m)) {
    const int64_t n = p.numel();
    r.total_params += n;
    switch (p.kind) {
      case ParamKind::kEmbedding:
      case ParamKind::kLmHead: r.embedding_params += n; break;
      case ParamKind::kNorm: r.norm_params += n; break;
      case ParamKind::kAttention: r.attention_params += n; break;
      case ParamKind::kDenseMlp: r.dense_mlp_params += n; break;
      case ParamKind::kRouter: r.router_params += n; break;
      case ParamKind::kRoutedExpert: r.routed_expert_params += n; break;
      case ParamKind::kSharedExpert: r.shared_expert_params += n; break;
    }
    // A token passes through top_k of the E routed experts.
    if (p.kind == ParamKind::kRoutedExpert) skipped_expert_params += n / m.num_experts * (m.num_experts - m.moe_top_k);
    const bool multiplies = p.kind != ParamKind::kEmbedding && p.kind != ParamKind::kNorm;
    if (multiplies) r.matmul_params_per_token += n;

    // The planned rank's placement (the same sizes as every rank's of its stage): its flat FSDP shard.
    if (!on_pipeline_stage(p, m, layout.pp, r.pp_stage)) continue;
    const ParamPlacement place = place_parameter(p.shape, p.tp_dim, p.expert_parallel, layout, MeshCoord{});
    r.params_per_rank += place.shards > 1 ? place.shard_numel : place.local_numel();
  }
  // A tied embedding also serves as the LM head matmul.
  if (m.tie_embeddings) r.matmul_params_per_token += m.vocab_size * m.dim;
  r.matmul_params_per_token -= skipped_expert_params;
  r.active_params = r.total_params - skipped_expert_params;
  r.routed_expert_share = r.total_params ? static_cast<double>(r.routed_expert_params) / r.total_params : 0;

  r.matmul_flops_per_token = 6.0 * static_cast<double>(r.matmul_params_per_token);
  r.attention_flops_per_token = 12.0 * static_cast<double>(m.n_layers) * static_cast<double>(m.n_heads * head_dim(m)) *
                                static_cast<double>(cfg.train.seq_len);
  r.flops_per_token = r.matmul_flops_per_token + r.attention_flops_per_token;
  r.tokens_per_step = cfg.train.batch_size * cfg.train.seq_len * cfg.train.grad_accum_steps * layout.dp_replicate *
                      layout.dp_shard * layout.ep;

  r.master_weight_bytes = 4 * r.params_per_rank;
  r.compute_copy_bytes = bf16 ? 2 * r.params_per_rank : 0;
  r.gradient_bytes = built.params - r.master_weight_bytes - r.compute_copy_bytes;
  r.optimizer_bytes = built.optimizer;
  r.fsdp_buffer_bytes = built.fsdp;
  r.activation_bytes = built.model;
  r.total_bytes = built.params + built.fsdp + built.model + built.optimizer;
  if (cfg.train.device != TrainDevice::kCpu) {
    const auto [H, G] = local_heads(m, layout);
    const kernels::AttentionProblem p{
        cfg.train.batch_size, cfg.train.seq_len, H, G, head_dim(m), bf16 ? DType::kBF16 : DType::kF32};
    // The plan cannot see the GPU: it assumes one where cuDNN's attention runs (sm_90, cuDNN 9).
    const kernels::VendorFacts hopper{90, 90000, true};
    const kernels::Choice choice = kernels::choose_attention(p, hopper, kernel_settings_of(cfg.train));
    r.attention_kernel = choice.vendor ? "cuDNN fused SDPA" : kernels::kBuiltinAttention;
    r.attention_workspace_bytes =
        choice.vendor ? kernels::cudnn_attention_workspace_bytes(p, cfg.train.deterministic) : 4 * p.B * p.H * p.T;
  }
  if (cfg.train.device != TrainDevice::kCpu && cfg.train.mixed_precision == Precision::kFp8) {
    // fp8 runs with tp = 1: every dense GEMM's full shape, N tokens each.
    const int64_t N = cfg.train.batch_size * cfg.train.seq_len, D = m.dim, Dh = head_dim(m);
    std::vector<std::array<int64_t, 2>> shapes = {{D, m.n_heads * Dh}, {D, kv_heads(m) * Dh}, {m.n_heads * Dh, D}};
    if (num_moe_blocks(m) < m.n_layers) shapes.insert(shapes.end(), {{D, ffn_hidden(m)}, {ffn_hidden(m), D}});
    for (const auto& [I, O] : shapes) {
      r.fp8_workspace_bytes = std::max(r.fp8_workspace_bytes, ops::fp8_matmul_gpu_bytes(N, I, O));
    }
  }
  r.gpu_total_bytes = r.total_bytes + r.attention_workspace_bytes + r.fp8_workspace_bytes;
  return r;
}

namespace {

// 1234567 -> "1,234,567" (whatever the locale).
std::string grouped(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

std::string count(int64_t n) {
  const double x = static_cast<double>(n);
  const std::string g = fmt::format("{:>15}", grouped(n));
  if (x >= 1e9) return fmt::format("{}  ({:.2f}B)", g, x / 1e9);
  if (x >= 1e6) return fmt::format("{}  ({:.2f}M)", g, x / 1e6);
  if (x >= 1e3) return fmt::format("{}  ({:.2f}K)", g, x / 1e3);
  return g;
}

std::string bytes(int64_t b) {
  const double x = static_cast<double>(b);
  if (x >= 1024.0 * 1024 * 1024) return fmt::format("{:>10.2f} GiB", x / (1024.0 * 1024 * 1024));
  return fmt::format("{:>10.2f} MiB", x / (1024.0 * 1024));
}

}  // namespace

std::string format_dry_run(const DryRunReport& r, const JobConfig& cfg, const std::string& source) {
  const Layout& l = r.layout;
  const ModelConfig& m = cfg.model;
  std::string out;
  auto line = [&out](const std::string& label, const std::string& value) {
    out += fmt::format("  {:<40}{}\n", label, value);
  };
  out += fmt::format("moe_train --dry-run  {}\n", source);
  out += fmt::format("layout: dp_replicate={} dp_shard={} cp={} ep={} tp={} pp={}  (world size {})\n", l.dp_replicate,
                     l.dp_shard, l.cp, l.ep, l.tp, l.pp, l.world());
  if (l.pp > 1) {
    std::string stages;
    for (int64_t s = 0; s < l.pp; ++s) {
      const StageBlocks b = stage_blocks(m, l.pp, s);
      stages += fmt::format("{}{}-{}", s ? ", " : "", b.first, b.last - 1);
    }
    out += fmt::format("pipeline: {} stages, 1F1B over grad_accum_steps = {} micro-batches; blocks {}\n", l.pp,
                       cfg.train.grad_accum_steps, stages);
  }
  out += fmt::format("model:  dim={} layers={} heads={}/{} kv  vocab={}  ", m.dim, m.n_layers, m.n_heads, kv_heads(m),
                     m.vocab_size);
  if (m.num_experts > 0) {
    out += fmt::format("{} experts top-{} in {} of {} blocks, expert hidden {}\n", m.num_experts, m.moe_top_k,
                       num_moe_blocks(m), m.n_layers, expert_hidden(m));
    const int64_t tokens = cfg.train.batch_size * cfg.train.seq_len;
    const bool experts_choose = router_experts_choose(m.moe_router);
    auto capacity = [&](bool training) {
      const int64_t c = moe_capacity(m, tokens, training);
      if (experts_choose) {
        return c > 0 && c < tokens ? fmt::format("each expert takes {} of a micro-batch's {} tokens", c, tokens)
                                   : std::string("every expert takes every token");
      }
      return c > 0 ? fmt::format("at most {} pairs per expert and micro-batch", c) : std::string("dropless");
    };
    std::string noise =
        m.moe_router_jitter > 0 ? fmt::format(" with input jitter {:g} in training", m.moe_router_jitter) : "";
    if (m.moe_expert_dropout > 0) noise += fmt::format(", expert dropout {:g} in training", m.moe_expert_dropout);
    out += fmt::format("routing: {}{}; training {}, evaluation {}\n", m.moe_router, noise, capacity(true),
                       capacity(false));
  } else {
    out += fmt::format("dense, ffn hidden {}\n", ffn_hidden(m));
  }
  out += "\nparameters\n";
  line("total", count(r.total_params));
  line("  embedding + LM head", count(r.embedding_params));
  line("  attention", count(r.attention_params));
  line("  dense MLP", count(r.dense_mlp_params));
  line("  router", count(r.router_params));
  line("  routed experts", count(r.routed_expert_params));
  line("  shared experts", count(r.shared_expert_params));
  line("  norms", count(r.norm_params));
  line("active per token", count(r.active_params));
  line("routed-expert share of total", fmt::format("{:>14.1f}%", 100.0 * r.routed_expert_share));

  out += "\ncompute (training, forward + backward)\n";
  line("FLOPs per token", fmt::format("{:>15.4g}", r.flops_per_token));
  line("  matmuls: 6 x active matmul params", fmt::format("{:>15.4g}", r.matmul_flops_per_token));
  line("  attention: 12 x layers x dim x seq_len", fmt::format("{:>15.4g}", r.attention_flops_per_token));
  line("tokens per optimizer step (global)", count(r.tokens_per_step));
  line("FLOPs per optimizer step",
       fmt::format("{:>15.4g}", r.flops_per_token * static_cast<double>(r.tokens_per_step)));

  out += fmt::format("\nmemory per rank (computing in {}{}{})\n", r.compute_dtype.name(),
                     cfg.train.mixed_precision == Precision::kFp8 ? ", dense GEMMs in fp8" : "",
                     l.pp > 1 ? fmt::format("; pipeline stage {} of {}, the largest", r.pp_stage, l.pp) : "");
  line("parameters held (shard)", count(r.params_per_rank));
  line("fp32 master weights", bytes(r.master_weight_bytes));
  if (r.compute_copy_bytes > 0) line("bf16 copy of the weights", bytes(r.compute_copy_bytes));
  line("fp32 gradients", bytes(r.gradient_bytes));
  line("AdamW moments (fp32 m, v)", bytes(r.optimizer_bytes));
  if (l.dp_shard > 1) line("FSDP gather buffers (block + outer)", bytes(r.fsdp_buffer_bytes));
  const std::string checkpointing = cfg.train.activation_checkpointing == ActivationCheckpointing::kNone
                                        ? ""
                                        : fmt::format(", {} checkpointing", cfg.train.activation_checkpointing.name());
  line(fmt::format("activations ({} x {} tokens{})", cfg.train.batch_size, cfg.train.seq_len, checkpointing),
       bytes(r.activation_bytes));
  line("total", bytes(r.total_bytes));
  if (r.attention_workspace_bytes > 0) {
    line("on a GPU, attention's workspace", bytes(r.attention_workspace_bytes) + "  (" + r.attention_kernel +
                                                (cfg.train.deterministic ? "" : ", not deterministic") + ")");
    if (r.fp8_workspace_bytes > 0) {
      line("on a GPU, FP8 codes of the largest GEMM", bytes(r.fp8_workspace_bytes));
    }
    line("total on a GPU", bytes(r.gpu_total_bytes));
  }
  const CommPlan comm = plan_communication(cfg, l, r.compute_dtype == Precision::kBf16 ? 2 : 4, r.flops_per_token,
                                           cfg.train.device != TrainDevice::kCpu);
  out += format_comm_plan(comm, cfg);
  return out;
}

}  // namespace moe
