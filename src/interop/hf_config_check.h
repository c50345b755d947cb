// Checks a Hugging Face config.json against the model config before any
// weights are read: the architecture and every key that decides a tensor's
// shape or the function the weights compute (sizes, heads, experts, top-k,
// tied embeddings, RoPE, norm epsilon, routing and window rules). The first
// mismatch is a UserError naming the key, both values and the fix.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "src/config/job_config.h"

namespace moe {

// `path` names the file in messages.
void check_hf_config(const ModelConfig& m, const nlohmann::json& file, const std::string& path);

}  // namespace moe
