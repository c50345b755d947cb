// The parameter registry: every weight of the model described as data — its
// Hugging Face style name, its global shape as we store it, and how it is split
// across the mesh. FSDP, the optimizer, checkpoints, the HF exporter and the
// --dry-run calculator all read this one list; none keeps its own.
//
// Shapes: linear weights are [out, in] (as in HF/PyTorch); packed experts are
// w1, w3: [E, dim, hidden] and w2: [E, hidden, dim].
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "src/config/job_config.h"

namespace moe {

enum class ParamKind {
  kEmbedding,     // token embedding (a lookup: no matmul FLOPs)
  kNorm,          // RMSNorm weights
  kAttention,     // q, k, v, o projections
  kDenseMlp,      // SwiGLU of a dense block
  kRouter,        // MoE router
  kRoutedExpert,  // packed routed experts (dim 0 = expert)
  kSharedExpert,  // always-on experts of an MoE block
  kLmHead,        // output projection (absent when tied to the embedding)
};

struct ParamSpec {
  std::string name;            // e.g. "model.layers.3.self_attn.q_proj.weight"
  std::vector<int64_t> shape;  // global shape
  ParamKind kind;
  int64_t block;         // transformer block index; -1 for embedding, final norm, LM head
  int tp_dim;            // dimension split over the tp group; -1 = replicated across tp
  bool expert_parallel;  // dim 0 split over the ep group (routed experts)

  int64_t numel() const;
};

std::vector<ParamSpec> model_param_specs(const ModelConfig& m);

// Whether pipeline stage `stage` of `pp` holds p: its blocks' parameters
// (stage_blocks), the embedding on the first stage, the final norm and the LM
// head on the last.
bool on_pipeline_stage(const ParamSpec& p, const ModelConfig& m, int64_t pp, int64_t stage);

}  // namespace moe
