// The Hugging Face style names of the parameters, in one place: the registry
// (param_spec.cc) declares them, the layers and the checkpoint code look them
// up with the same helpers, so a name is never spelled twice.
#pragma once

#include <cstdint>
#include <string>

namespace moe::param_name {

inline std::string block(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }
inline std::string in_block(int64_t layer, const std::string& rest) { return block(layer) + rest; }

// An MoE block's tensors.
inline std::string moe(int64_t layer) { return block(layer) + "block_sparse_moe."; }
inline std::string router_gate(int64_t layer) { return moe(layer) + "gate.weight"; }
// noisy_topk's noise gate [E, dim] (named within the MoE block, as router_extra_weights lists it).
inline const char* const kRouterNoiseGate = "gate_noise.weight";
inline std::string router_noise_gate(int64_t layer) { return moe(layer) + kRouterNoiseGate; }
// The router's selection bias (sigmoid_topk; DeepSeek-V3's name), kept in checkpoints.
inline std::string router_bias(int64_t layer) { return moe(layer) + "gate.e_score_correction_bias"; }
// which: "w1", "w3" or "w2" of the packed routed experts [E, ...].
inline std::string routed_experts(int64_t layer, const std::string& which) { return moe(layer) + "experts." + which; }
inline std::string shared_experts(int64_t layer, const std::string& which) {
  return moe(layer) + "shared_experts." + which;
}

inline std::string embedding() { return "model.embed_tokens.weight"; }
inline std::string final_norm() { return "model.norm.weight"; }
inline std::string lm_head() { return "lm_head.weight"; }

}  // namespace moe::param_name
