// Values derived from the config, each computed in exactly one place.
#pragma once

#include <cstdint>
#include <optional>

#include "src/config/job_config.h"

namespace moe {

int64_t kv_heads(const ModelConfig& m);  // n_kv_heads, or n_heads when unset
int64_t head_dim(const ModelConfig& m);  // dim / n_heads
// Dense SwiGLU hidden size: ffn_hidden_dim, or Llama's 256*ceil(int(4*dim*2/3*mult)/256).
int64_t ffn_hidden(const ModelConfig& m);
// Hidden size of each routed and shared expert: max(16, 16*round(int(ffn_hidden*mult)/16)),
// rounding half to even as Python's round() does.
int64_t expert_hidden(const ModelConfig& m);
bool is_moe_block(const ModelConfig& m, int64_t layer);  // (layer+1) % moe_frequency == 0
int64_t num_moe_blocks(const ModelConfig& m);
// Pairs each expert may keep from a micro-batch of `tokens`: ceil(cf * tokens
// * k / E), or 0 (no limit) when cf <= 0 or moe_drop_tokens is false. cf is
// moe_capacity_factor in training, moe_eval_capacity_factor (when not -1) in
// evaluation.
int64_t moe_capacity(const ModelConfig& m, int64_t tokens, bool training = true);
// The most experts one token reaches: the dispatcher's per-token rows on a
// GPU (kMaxTopK of its kernels), a rule on every device so that configs move.
inline constexpr int64_t kMaxExpertsPerToken = 32;
// The (token, expert) slots of each token the dispatcher plans: moe_top_k,
// or num_experts when the experts choose (router_experts_choose): every token
// offers itself to every expert, and capacity decides.
int64_t moe_slots(const ModelConfig& m);
// The pairs a training micro-batch of `tokens` routes, for the dropped
// fraction: tokens x moe_top_k, or, when the experts choose, what they take
// (num_experts x min(capacity, tokens)), so none counts as dropped.
int64_t moe_routed_pairs(const ModelConfig& m, int64_t tokens);
// Rows the local experts of one rank may compute in a micro-batch under
// expert parallelism `ep`, in training or evaluation, whichever is more: each
// of the ep ranks sends at most capacity rows per local expert, and never
// more than all its tokens x moe_slots pairs (the dropless worst case: every
// pair to one rank). With ep = 1, the rows of the micro-batch's experts.
int64_t moe_max_local_rows(const ModelConfig& m, int64_t tokens, int64_t ep);
// Rows of logits per LM-head chunk: ce_chunk_size when set (at most tokens),
// else 2^27 logits' worth (256 MiB in bf16, 512 MiB in fp32): about 4096 rows
// for a 32K vocabulary, so that the head's three GEMMs per chunk are tall
// enough to keep an H100's tensor cores busy, while the full [tokens, vocab]
// matrix (8 GiB for 2 x 2048 tokens of a 128K vocabulary in bf16) never
// exists.
int64_t lm_head_chunk_rows(int64_t ce_chunk_size, int64_t tokens, int64_t vocab);

// The parallel layout with dp_shard = -1 resolved.
struct Layout {
  int64_t dp_replicate = 1, dp_shard = 1, cp = 1, ep = 1, tp = 1, pp = 1;
  int64_t world() const { return dp_replicate * dp_shard * cp * ep * tp * pp; }
};

// With `world_size`, dp_shard = -1 takes what the other axes leave (a UserError
// when they do not divide it) and the product must equal world_size. Without
// it (--dry-run, --print-config), dp_shard = -1 counts as 1.
Layout resolve_layout(const DistributedConfig& d, std::optional<int64_t> world_size);

// The transformer blocks of pipeline stage `stage` of `pp`: [first, last).
// The n_layers blocks split as evenly as they go, the earlier stages taking
// one more where pp does not divide them (the last stage also runs the LM
// head). Stage 0 also holds the embedding, the last the final norm and head.
struct StageBlocks {
  int64_t first = 0, last = 0;
};
StageBlocks stage_blocks(const ModelConfig& m, int64_t pp, int64_t stage);

// Fills the keys whose defaults depend on others (n_kv_heads, ffn_hidden_dim),
// so that --print-config shows what will be used.
void fill_derived_defaults(JobConfig& cfg);

}  // namespace moe
