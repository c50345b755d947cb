#include "src/model/param_spec.h"

#include "src/config/derived.h"
#include "src/core/tensor.h"
#include "src/config/router_names.h"
#include "src/model/param_names.h"

namespace moe {

int64_t ParamSpec::numel() const { return numel_of(shape); }

std::vector<ParamSpec> model_param_specs(const ModelConfig& m) {
  const int64_t d = m.dim, hd = head_dim(m), q = m.n_heads * hd, kv = kv_heads(m) * hd;
  const int64_t ffn = ffn_hidden(m), eh = expert_hidden(m), E = m.num_experts, S = m.moe_shared_experts;
  using K = ParamKind;

  // Tensor parallelism: q/k/v and the dense SwiGLU up-projections split by
  // output (column-parallel), o and the down-projection by input
  // (row-parallel). Replicated across tp: norms, the embedding and the LM head
  // (a vocab-parallel head with a vocab-parallel cross-entropy would save
  // their memory: not built yet), the router, and the routed and shared
  // experts (the tp ranks of an MoE block compute the same tokens; expert
  // parallelism splits experts instead).
  std::vector<ParamSpec> p;
  p.push_back({param_name::embedding(), {m.vocab_size, d}, K::kEmbedding, -1, -1, false});
  for (int64_t i = 0; i < m.n_layers; ++i) {
    const std::string b = param_name::block(i);
    p.push_back({b + "input_layernorm.weight", {d}, K::kNorm, i, -1, false});
    p.push_back({b + "self_attn.q_proj.weight", {q, d}, K::kAttention, i, 0, false});
    p.push_back({b + "self_attn.k_proj.weight", {kv, d}, K::kAttention, i, 0, false});
    p.push_back({b + "self_attn.v_proj.weight", {kv, d}, K::kAttention, i, 0, false});
    p.push_back({b + "self_attn.o_proj.weight", {d, q}, K::kAttention, i, 1, false});
    p.push_back({b + "post_attention_layernorm.weight", {d}, K::kNorm, i, -1, false});
    if (is_moe_block(m, i)) {
      p.push_back({param_name::router_gate(i), {E, d}, K::kRouter, i, -1, false});
      for (const std::string& w : router_extra_weights(m.moe_router)) {
        p.push_back({param_name::moe(i) + w, {E, d}, K::kRouter, i, -1, false});
      }
      p.push_back({param_name::routed_experts(i, "w1"), {E, d, eh}, K::kRoutedExpert, i, -1, true});
      p.push_back({param_name::routed_experts(i, "w3"), {E, d, eh}, K::kRoutedExpert, i, -1, true});
      p.push_back({param_name::routed_experts(i, "w2"), {E, eh, d}, K::kRoutedExpert, i, -1, true});
      if (S > 0) {
        p.push_back({param_name::shared_experts(i, "w1"), {S, d, eh}, K::kSharedExpert, i, -1, false});
        p.push_back({param_name::shared_experts(i, "w3"), {S, d, eh}, K::kSharedExpert, i, -1, false});
        p.push_back({param_name::shared_experts(i, "w2"), {S, eh, d}, K::kSharedExpert, i, -1, false});
      }
    } else {
      p.push_back({b + "mlp.gate_proj.weight", {ffn, d}, K::kDenseMlp, i, 0, false});
      p.push_back({b + "mlp.up_proj.weight", {ffn, d}, K::kDenseMlp, i, 0, false});
      p.push_back({b + "mlp.down_proj.weight", {d, ffn}, K::kDenseMlp, i, 1, false});
    }
  }
  p.push_back({param_name::final_norm(), {d}, K::kNorm, -1, -1, false});
  if (!m.tie_embeddings) p.push_back({param_name::lm_head(), {m.vocab_size, d}, K::kLmHead, -1, -1, false});
  return p;
}

bool on_pipeline_stage(const ParamSpec& p, const ModelConfig& m, int64_t pp, int64_t stage) {
  if (p.block >= 0) {
    const StageBlocks b = stage_blocks(m, pp, stage);
    return p.block >= b.first && p.block < b.last;
  }
  return p.kind == ParamKind::kEmbedding ? stage == 0 : stage == pp - 1;
}

}  // namespace moe
