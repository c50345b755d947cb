// Export to Hugging Face: model.safetensors + config.json in the architecture
// that represents the model exactly:
//   dense                                  -> LlamaForCausalLM
//   MoE in every block (moe_frequency = 1) -> MixtralForCausalLM
//   MoE every n-th block (moe_frequency>1) -> Qwen2MoeForCausalLM (its
//       decoder_sparse_step is the same rule; its mandatory gated shared expert
//       is written with a zero down-projection, so it adds exactly 0, and its
//       q/k/v biases are written as zeros)
// Anything none of these represents exactly (sigmoid_topk, shared experts) is
// refused with a one-line reason, never exported approximately.
#pragma once

#include <string>

#include "src/config/job_config.h"
#include "src/model/params.h"

namespace moe {

// The architecture name, or a UserError saying why there is none.
std::string hf_architecture(const ModelConfig& m);

// Writes dir/model.safetensors and dir/config.json (the folder is created).
void export_hf(const ModelConfig& m, const ParamStore& params, const std::string& dir);

}  // namespace moe
