#include "src/config/derived.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "src/config/router_names.h"
#include "src/core/user_error.h"

namespace moe {

int64_t kv_heads(const ModelConfig& m) { return m.n_kv_heads.value_or(m.n_heads); }

int64_t head_dim(const ModelConfig& m) { return m.dim / m.n_heads; }

int64_t ffn_hidden(const ModelConfig& m) {
  if (m.ffn_hidden_dim) return *m.ffn_hidden_dim;
  // Same operation order as the Python formula, so the same float rounding.
  const double raw = static_cast<double>(4 * m.dim) * (2.0 / 3.0) * m.ffn_dim_multiplier;
  const auto truncated = static_cast<int64_t>(raw);
  return 256 * static_cast<int64_t>(std::ceil(static_cast<double>(truncated) / 256.0));
}

int64_t expert_hidden(const ModelConfig& m) {
  const auto scaled = static_cast<int64_t>(static_cast<double>(ffn_hidden(m)) * m.moe_expert_ffn_multiplier);
  // nearbyint under the default rounding mode rounds half to even, like Python.
  const auto rounded = static_cast<int64_t>(std::nearbyint(static_cast<double>(scaled) / 16.0));
  return std::max<int64_t>(16, 16 * rounded);
}

bool is_moe_block(const ModelConfig& m, int64_t layer) {
  return m.num_experts > 0 && m.moe_frequency > 0 && (layer + 1) % m.moe_frequency == 0;
}

int64_t num_moe_blocks(const ModelConfig& m) {
  int64_t n = 0;
  for (int64_t i = 0; i < m.n_layers; ++i) n += is_moe_block(m, i) ? 1 : 0;
  return n;
}

Layout resolve_layout(const DistributedConfig& d, std::optional<int64_t> world_size) {
  Layout l;
  l.dp_replicate = d.dp_replicate;
  l.cp = d.cp;
  l.ep = d.ep;
  l.tp = d.tp;
  l.pp = d.pp;
  const int64_t others = l.dp_replicate * l.cp * l.ep * l.tp * l.pp;
  const std::string product = "dp_replicate*cp*ep*tp*pp = " + std::to_string(l.dp_replicate) + "*" +
                              std::to_string(l.cp) + "*" + std::to_string(l.ep) + "*" + std::to_string(l.tp) + "*" +
                              std::to_string(l.pp) + " = " + std::to_string(others);
  if (d.dp_shard > 0) {
    l.dp_shard = d.dp_shard;
  } else if (!world_size) {
    l.dp_shard = 1;
  } else if (*world_size % others != 0) {
    throw UserError("distributed.dp_shard = -1 with " + std::to_string(*world_size) +
                    " ranks: the world size must be divisible by " + product + "; launch a multiple of " +
                    std::to_string(others) + " ranks or change the layout");
  } else {
    l.dp_shard = *world_size / others;
  }
  if (world_size && l.world() != *world_size) {
    throw UserError("distributed layout dp_replicate*dp_shard*cp*ep*tp*pp = " + std::to_string(l.dp_replicate) + "*" +
                    std::to_string(l.dp_shard) + "*" + std::to_string(l.cp) + "*" + std::to_string(l.ep) + "*" +
                    std::to_string(l.tp) + "*" + std::to_string(l.pp) + " = " + std::to_string(l.world()) +
                    " ranks, but the job has " + std::to_string(*world_size) +
                    ": launch that many ranks, or set distributed.dp_shard = -1 to fill the world");
  }
  return l;
}

void fill_derived_defaults(JobConfig& cfg) {
  cfg.model.n_kv_heads = kv_heads(cfg.model);
  cfg.model.ffn_hidden_dim = ffn_hidden(cfg.model);
}

int64_t moe_capacity(const ModelConfig& m, int64_t tokens, bool training) {
  const double cf = training || m.moe_eval_capacity_factor == -1.0 ? m.moe_capacity_factor : m.moe_eval_capacity_factor;
  if (cf <= 0 || !m.moe_drop_tokens) return 0;
  return static_cast<int64_t>(
      std::ceil(cf * static_cast<double>(tokens * m.moe_top_k) / static_cast<double>(m.num_experts)));
}

int64_t moe_slots(const ModelConfig& m) { return router_experts_choose(m.moe_router) ? m.num_experts : m.moe_top_k; }

int64_t moe_routed_pairs(const ModelConfig& m, int64_t tokens) {
  if (!router_experts_choose(m.moe_router)) return tokens * m.moe_top_k;
  const int64_t capacity = moe_capacity(m, tokens, true);
  return m.num_experts * (capacity > 0 ? std::min(capacity, tokens) : tokens);
}

int64_t moe_max_local_rows(const ModelConfig& m, int64_t tokens, int64_t ep) {
  const int64_t pairs = tokens * moe_slots(m);
  const int64_t local_experts = m.num_experts / ep;
  int64_t rows = 0;
  for (bool training : {true, false}) {
    const int64_t capacity = moe_capacity(m, tokens, training);
    rows = std::max(rows, capacity > 0 ? std::min(ep * pairs, ep * local_experts * capacity) : ep * pairs);
  }
  return rows;
}

StageBlocks stage_blocks(const ModelConfig& m, int64_t pp, int64_t stage) {
  const int64_t base = m.n_layers / pp, extra = m.n_layers % pp;
  const int64_t first = stage * base + std::min(stage, extra);
  return {first, first + base + (stage < extra ? 1 : 0)};
}

int64_t lm_head_chunk_rows(int64_t ce_chunk_size, int64_t tokens, int64_t vocab) {
  if (ce_chunk_size > 0) return std::min(ce_chunk_size, tokens);
  return std::clamp<int64_t>((int64_t{1} << 27) / vocab, 1, tokens);
}

}  // namespace moe
