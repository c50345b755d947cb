#include "src/config/validate.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <fmt/format.h>

#include "src/config/derived.h"
#include "src/config/router_names.h"
#include "src/core/user_error.h"

namespace moe {
namespace {

// Every rule fails the same way: "key = value: rule; fix".
template <typename T>
[[noreturn]] void reject(const std::string& key, const T& value, const std::string& rule, const std::string& fix) {
  throw UserError(fmt::format("{} = {}: {}; {}", key, value, rule, fix));
}

void positive(const std::string& key, int64_t v) {
  if (v <= 0) reject(key, v, "must be positive", "set it to a value >= 1");
}

void positive(const std::string& key, double v) {
  if (!(v > 0) || std::isinf(v)) reject(key, v, "must be a positive finite number", "set it to a value > 0");
}

void non_negative(const std::string& key, int64_t v) {
  if (v < 0) reject(key, v, "must not be negative", "set it to 0 or more");
}

void non_negative(const std::string& key, double v) {
  if (!(v >= 0) || std::isinf(v)) reject(key, v, "must be a finite number, not negative", "set it to 0 (off) or more");
}

void in_unit_interval(const std::string& key, double v, bool include_one) {
  if (!(v >= 0 && (include_one ? v <= 1 : v < 1))) {
    reject(key, v, include_one ? "must be in [0, 1]" : "must be in [0, 1)", "pick a value in that range");
  }
}

void check_sizes(const JobConfig& c) {
  const auto& m = c.model;
  positive("model.dim", m.dim);
  positive("model.n_layers", m.n_layers);
  positive("model.n_heads", m.n_heads);
  if (m.n_kv_heads) positive("model.n_kv_heads", *m.n_kv_heads);
  positive("model.vocab_size", m.vocab_size);
  positive("model.ffn_dim_multiplier", m.ffn_dim_multiplier);
  if (m.ffn_hidden_dim) positive("model.ffn_hidden_dim", *m.ffn_hidden_dim);
  positive("model.norm_eps", m.norm_eps);
  positive("model.rope_theta", m.rope_theta);
  positive("model.max_seq_len", m.max_seq_len);
  positive("model.init_std", m.init_std);
  non_negative("model.num_experts", m.num_experts);
  positive("model.moe_frequency", m.moe_frequency);
  non_negative("model.moe_shared_experts", m.moe_shared_experts);
  non_negative("model.moe_capacity_factor", m.moe_capacity_factor);
  if (m.moe_eval_capacity_factor != -1.0) {
    if (!(m.moe_eval_capacity_factor >= 0) || std::isinf(m.moe_eval_capacity_factor)) {
      reject("model.moe_eval_capacity_factor", m.moe_eval_capacity_factor,
             "must be -1 (the training capacity factor), 0 (dropless) or a positive finite number",
             "set it to -1, 0 or more");
    }
  }
  if (!(m.moe_router_jitter >= 0 && m.moe_router_jitter < 1)) {
    reject("model.moe_router_jitter", m.moe_router_jitter,
           "must be in [0, 1): the router sees x times a factor in (1 - eps, 1 + eps)",
           "set it to 0 (off) or a small value such as 0.01");
  }
  if (!(m.moe_expert_dropout >= 0 && m.moe_expert_dropout < 1)) {
    reject("model.moe_expert_dropout", m.moe_expert_dropout,
           "must be in [0, 1): the probability of zeroing an expert's hidden activation",
           "set it to 0 (off) or a rate such as 0.1");
  }
  positive("model.moe_expert_ffn_multiplier", m.moe_expert_ffn_multiplier);
  non_negative("model.moe_bias_update_rate", m.moe_bias_update_rate);
  non_negative("model.moe_aux_loss_weight", m.moe_aux_loss_weight);
  non_negative("model.moe_router_z_loss_weight", m.moe_router_z_loss_weight);
  non_negative("model.moe_sequence_aux_loss_weight", m.moe_sequence_aux_loss_weight);

  const auto& t = c.train;
  positive("train.batch_size", t.batch_size);
  positive("train.seq_len", t.seq_len);
  positive("train.max_steps", t.max_steps);
  positive("train.grad_accum_steps", t.grad_accum_steps);
  positive("train.grad_clip_norm", t.grad_clip_norm);
  non_negative("train.max_skipped", t.max_skipped);
  non_negative("train.spike_factor", t.spike_factor);
  non_negative("train.ce_chunk_size", t.ce_chunk_size);

  const auto& o = c.optimizer;
  positive("optimizer.lr", o.lr);
  non_negative("optimizer.weight_decay", o.weight_decay);
  in_unit_interval("optimizer.betas[0]", o.betas[0], false);
  in_unit_interval("optimizer.betas[1]", o.betas[1], false);
  positive("optimizer.eps", o.eps);

  const auto& s = c.scheduler;
  non_negative("scheduler.warmup_steps", s.warmup_steps);
  if (s.decay_steps) non_negative("scheduler.decay_steps", *s.decay_steps);
  if (s.stable_steps) non_negative("scheduler.stable_steps", *s.stable_steps);
  in_unit_interval("scheduler.min_lr_ratio", s.min_lr_ratio, true);

  const auto& d = c.distributed;
  if (d.dp_shard == 0 || d.dp_shard < -1) {
    reject("distributed.dp_shard", d.dp_shard, "must be -1 (fill the world) or positive",
           "set it to -1 or a rank count >= 1");
  }
  positive("distributed.dp_replicate", d.dp_replicate);
  positive("distributed.tp", d.tp);
  positive("distributed.ep", d.ep);
  positive("distributed.pp", d.pp);
  positive("distributed.cp", d.cp);
  positive("distributed.nccl_timeout_sec", d.nccl_timeout_sec);
  positive("distributed.gpus_per_node", d.gpus_per_node);
  positive("distributed.intra_node_gb_s", d.intra_node_gb_s);
  positive("distributed.inter_node_gb_s", d.inter_node_gb_s);
  non_negative("distributed.intra_node_latency_us", d.intra_node_latency_us);
  non_negative("distributed.inter_node_latency_us", d.inter_node_latency_us);

  positive("eval.interval", c.eval.interval);
  positive("eval.steps", c.eval.steps);
  positive("checkpoint.interval", c.checkpoint.interval);
  positive("metrics.log_interval", c.metrics.log_interval);
  non_negative("metrics.peak_tflops", c.metrics.peak_tflops);
  positive("metrics.planned_mfu", c.metrics.planned_mfu);
  in_unit_interval("metrics.planned_mfu", c.metrics.planned_mfu, true);
}

// Sizes far beyond any model trained today, so that every count and byte
// size the planner and the model form from them fits int64: a size past its
// bound is one line, never an overflow, a hang or an abort in an allocation.
template <typename T>
void at_most(const std::string& key, T v, T max) {
  if (v > max) reject(key, v, fmt::format("must be at most {}", max), "this is far beyond any model; check the value");
}

void check_limits(const JobConfig& c) {
  const auto& m = c.model;
  at_most("model.dim", m.dim, int64_t{1} << 18);
  at_most("model.n_layers", m.n_layers, int64_t{1} << 12);
  at_most("model.n_heads", m.n_heads, int64_t{1} << 14);
  if (m.n_kv_heads) at_most("model.n_kv_heads", *m.n_kv_heads, int64_t{1} << 14);
  at_most("model.vocab_size", m.vocab_size, int64_t{1} << 24);
  at_most("model.ffn_dim_multiplier", m.ffn_dim_multiplier, 64.0);
  if (m.ffn_hidden_dim) at_most("model.ffn_hidden_dim", *m.ffn_hidden_dim, int64_t{1} << 22);
  at_most("model.max_seq_len", m.max_seq_len, int64_t{1} << 24);
  at_most("model.num_experts", m.num_experts, int64_t{1} << 16);
  at_most("model.moe_shared_experts", m.moe_shared_experts, int64_t{1} << 10);
  at_most("model.moe_frequency", m.moe_frequency, int64_t{1} << 12);
  at_most("model.moe_capacity_factor", m.moe_capacity_factor, 1024.0);
  at_most("model.moe_eval_capacity_factor", m.moe_eval_capacity_factor, 1024.0);
  at_most("model.moe_expert_ffn_multiplier", m.moe_expert_ffn_multiplier, 64.0);
  const auto& t = c.train;
  at_most("train.batch_size", t.batch_size, int64_t{1} << 24);
  at_most("train.seq_len", t.seq_len, int64_t{1} << 24);
  at_most("train.grad_accum_steps", t.grad_accum_steps, int64_t{1} << 20);
  at_most("train.max_steps", t.max_steps, int64_t{1} << 40);
  const auto& d = c.distributed;
  for (const auto& [key, v] : {std::pair<const char*, int64_t>{"distributed.dp_shard", d.dp_shard},
                               {"distributed.dp_replicate", d.dp_replicate},
                               {"distributed.tp", d.tp},
                               {"distributed.ep", d.ep},
                               {"distributed.pp", d.pp},
                               {"distributed.cp", d.cp}}) {
    at_most(key, v, int64_t{1} << 20);
  }
  // Products of bounded sizes can still be absurd: the parameters, the
  // largest activation of a micro-batch (its logits, or the routed tokens'
  // expert hidden), and the tokens of the whole run, in long double.
  using Big = long double;
  const Big dim = m.dim, hidden = ffn_hidden(m), experts = m.num_experts + m.moe_shared_experts;
  const Big params =
      Big(m.vocab_size) * dim * 2 +
      Big(m.n_layers) * (4 * dim * dim + (experts > 0 ? experts * 3 * dim * Big(expert_hidden(m)) : 3 * dim * hidden));
  if (params > 1e15L) {
    reject("model", fmt::format("{:.3g} parameters", static_cast<double>(params)), "more than 10^15",
           "check model.dim, n_layers, vocab_size, num_experts and the FFN sizes");
  }
  // Activations: per layer a few dozen tensors as wide as the widest of the
  // block, and the logits; 2^52 values keeps every byte count far from 2^63.
  const Big tokens = Big(t.batch_size) * Big(t.seq_len);
  const Big routed = m.num_experts > 0 ? Big(std::min(m.moe_top_k, m.num_experts)) * Big(expert_hidden(m)) * 2 : Big(0);
  const Big activations = tokens * (Big(m.n_layers) * 32 * std::max({dim, hidden, routed}) + 4 * Big(m.vocab_size));
  if (activations > Big(int64_t{1} << 52)) {
    reject(
        "train.batch_size", t.batch_size,
        fmt::format("with train.seq_len = {}, one micro-batch's activations reach about {:.3g} values, more than 2^52",
                    t.seq_len, static_cast<double>(activations)),
        "lower batch_size or seq_len, and raise grad_accum_steps for the same global batch");
  }
  if (tokens * Big(t.grad_accum_steps) * Big(t.max_steps) * Big(d.dp_shard > 0 ? d.dp_shard : 1) * Big(d.dp_replicate) >
      Big(int64_t{1} << 62)) {
    reject("train.max_steps", t.max_steps, "the run would see more than 2^62 tokens", "lower max_steps");
  }
}

void check_architecture(const ModelConfig& m) {
  const int64_t kv = kv_heads(m);
  if (m.dim % m.n_heads != 0) {
    reject("model.dim", m.dim, fmt::format("must be divisible by model.n_heads ({})", m.n_heads),
           "change dim or n_heads so that dim / n_heads is a whole head size");
  }
  if (m.n_heads % kv != 0) {
    reject("model.n_heads", m.n_heads, fmt::format("must be divisible by model.n_kv_heads ({})", kv),
           "pick n_kv_heads that divides n_heads (grouped-query attention)");
  }
  if (head_dim(m) % 2 != 0) {
    reject("model.dim", m.dim, fmt::format("gives an odd head size {} (dim / n_heads)", head_dim(m)),
           "RoPE rotates pairs of channels: choose dim and n_heads so that dim / n_heads is even");
  }
}

// expert_choice: each expert takes its capacity of the tokens that score it
// highest, so it needs a capacity, and a token may reach every expert.
void check_expert_choice(const ModelConfig& m) {
  const std::string with = fmt::format("with model.moe_router = \"{}\"", m.moe_router);
  if (m.num_experts > kMaxExpertsPerToken) {
    reject("model.num_experts", m.num_experts,
           fmt::format("must be at most {} {}: a token may reach every expert, and the dispatcher takes a token to "
                       "at most {} experts",
                       kMaxExpertsPerToken, with, kMaxExpertsPerToken),
           "use fewer experts, or a top-k router");
  }
  if (!(m.moe_capacity_factor > 0)) {
    reject("model.moe_capacity_factor", m.moe_capacity_factor,
           "must be > 0 " + with + ": each expert takes capacity_factor x tokens x moe_top_k / num_experts tokens",
           "set it, for example to 1.0 (on average moe_top_k experts per token)");
  }
  if (!m.moe_drop_tokens) {
    reject("model.moe_drop_tokens", false, with + " each expert takes exactly its capacity, which leaves tokens out",
           "set moe_drop_tokens = true, or use a top-k router for dropless routing");
  }
}

void check_moe(const ModelConfig& m) {
  if (m.num_experts > 0) {
    if (m.moe_top_k <= 0 || m.moe_top_k > m.num_experts) {
      reject("model.moe_top_k", m.moe_top_k, fmt::format("must be in 1..model.num_experts ({})", m.num_experts),
             "pick how many experts each token uses, at most num_experts");
    }
    if (m.moe_top_k > kMaxExpertsPerToken) {
      reject("model.moe_top_k", m.moe_top_k,
             fmt::format("must be at most {}: the dispatcher takes a token to at most {} experts", kMaxExpertsPerToken,
                         kMaxExpertsPerToken),
             "pick fewer experts per token");
    }
    if (router_experts_choose(m.moe_router)) check_expert_choice(m);
  } else if (m.moe_shared_experts > 0) {
    reject("model.moe_shared_experts", m.moe_shared_experts, "needs an MoE model (model.num_experts is 0)",
           "set model.num_experts > 0 or moe_shared_experts = 0");
  }
}

void check_parallel(const JobConfig& c) {
  const auto& m = c.model;
  const auto& d = c.distributed;
  if (m.num_experts > 0 && d.pp > 1) {
    reject("distributed.pp", d.pp, "MoE models cannot use pipeline parallelism",
           "set distributed.pp = 1 and use ep/tp/dp_shard to split the model");
  }
  if (c.train.mixed_precision == Precision::kFp8 && d.tp > 1) {
    reject("train.mixed_precision", quoted(c.train.mixed_precision),
           fmt::format("cannot be combined with tensor parallelism (tp = {})", d.tp),
           "use bf16 with tp > 1, or set distributed.tp = 1 for fp8");
  }
  if (d.ep > 1 && m.num_experts == 0) {
    reject("distributed.ep", d.ep, "expert parallelism needs experts (model.num_experts is 0)",
           "set distributed.ep = 1 for a dense model");
  }
  if (m.num_experts > 0 && m.num_experts % d.ep != 0) {
    reject("model.num_experts", m.num_experts, fmt::format("must be divisible by distributed.ep ({})", d.ep),
           "choose ep that divides num_experts so every EP rank holds the same number of experts");
  }
  if (m.n_heads % d.tp != 0) {
    reject("model.n_heads", m.n_heads, fmt::format("must be divisible by distributed.tp ({})", d.tp),
           "choose tp that divides n_heads (tensor parallelism splits attention by heads)");
  }
  if (kv_heads(m) % d.tp != 0) {
    reject("model.n_kv_heads", kv_heads(m), fmt::format("must be divisible by distributed.tp ({})", d.tp),
           "choose tp that divides n_kv_heads (each TP rank needs whole key/value heads)");
  }
  if (num_moe_blocks(m) < m.n_layers && ffn_hidden(m) % d.tp != 0) {
    reject("model.ffn_hidden_dim", ffn_hidden(m), fmt::format("must be divisible by distributed.tp ({})", d.tp),
           "choose ffn_hidden_dim (or tp) so that each TP rank holds an equal slice of the dense MLP");
  }
  if (d.pp > m.n_layers) {
    reject("distributed.pp", d.pp,
           fmt::format("must be at most model.n_layers ({}): each stage runs whole blocks", m.n_layers),
           "use fewer stages, or more layers");
  }
  if (m.tie_embeddings && d.pp > 1) {
    reject("model.tie_embeddings", "true", "cannot be used with pipeline parallelism (pp > 1)",
           "set model.tie_embeddings = false or distributed.pp = 1");
  }
}

// FP8's dense GEMMs (cuBLASLt's) take rows, in and out features in multiples
// of 16; held on every device, so that a config that trains on the CPU also
// trains on a GPU.
void check_fp8(const JobConfig& c) {
  if (c.train.mixed_precision != Precision::kFp8) return;
  const ModelConfig& m = c.model;
  const auto multiple_of_16 = [](const std::string& key, int64_t value, const std::string& what) {
    if (value % 16 == 0) return;
    reject(key, value,
           fmt::format("{} must be a multiple of 16 under train.mixed_precision = \"fp8\" (FP8 GEMMs need it)", what),
           "pick a multiple of 16, or use \"bf16\"");
  };
  multiple_of_16("model.dim", m.dim, "the model dimension");
  multiple_of_16("model.n_kv_heads", kv_heads(m) * head_dim(m), "n_kv_heads x head_dim (the k and v projections)");
  if (num_moe_blocks(m) < m.n_layers) {
    multiple_of_16("model.ffn_hidden_dim", ffn_hidden(m), "the dense FFN's hidden size");
  }
  multiple_of_16(
      "train.batch_size", c.train.batch_size * c.train.seq_len,
      fmt::format("batch_size x seq_len ({} x {}, the tokens of a micro-batch)", c.train.batch_size, c.train.seq_len));
}

void check_run(const JobConfig& c) {
  if (c.train.seq_len > c.model.max_seq_len) {
    reject("train.seq_len", c.train.seq_len, fmt::format("must be <= model.max_seq_len ({})", c.model.max_seq_len),
           "shorten seq_len or raise max_seq_len");
  }
  if (!c.checkpoint.load_path.empty() && !c.checkpoint.initial_load_path.empty()) {
    reject("checkpoint.initial_load_path", "\"" + c.checkpoint.initial_load_path + "\"",
           "cannot be combined with checkpoint.load_path (which resumes that checkpoint, all of it)",
           "set one of them: load_path continues a run, initial_load_path starts a new one from its weights");
  }
  if (c.eval.enabled && c.eval.dataset_path.empty()) {
    reject("eval.enabled", "true", "needs an eval dataset (eval.dataset_path is empty)",
           "set eval.dataset_path to a tokenized dataset, or eval.enabled = false");
  }
}

}  // namespace

void validate_config(const JobConfig& cfg) {
  check_sizes(cfg);
  check_limits(cfg);
  check_architecture(cfg.model);
  check_moe(cfg.model);
  check_parallel(cfg);
  check_fp8(cfg);
  check_run(cfg);
}

}  // namespace moe
