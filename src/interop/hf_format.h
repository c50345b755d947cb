// The Hugging Face form of a model: its architecture, its config.json, and
// every tensor's HF name and shape with where its values live in ours. Export
// (export_hf.h) and import (import_hf.h) both read this one description, so
// each is the other's exact inverse.
//
// Architectures, each chosen because it represents the model exactly:
//   dense                                  -> LlamaForCausalLM
//   MoE in every block (moe_frequency = 1) -> MixtralForCausalLM
//   MoE every n-th block (moe_frequency>1) -> Qwen2MoeForCausalLM (its
//       decoder_sparse_step is the same rule; its mandatory gated shared expert
//       has a zero down-projection, so it adds exactly 0, and its q/k/v biases
//       are zeros)
// noisy_topk is softmax_topk outside training: its noise gates (training-only)
// have no HF tensor, are not exported, and keep their values on import.
// Anything none of these represents exactly (sigmoid_topk, shared experts) is
// refused with a one-line reason, never converted approximately.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "src/config/job_config.h"

namespace moe {

// The architecture name, or a UserError saying why there is none; `flag`
// (--export-hf, --init-from-hf) starts the message.
std::string hf_architecture(const ModelConfig& m, const std::string& flag = "--export-hf");

// The config.json the model exports with.
nlohmann::ordered_json hf_config(const ModelConfig& m);

// One tensor of the HF checkpoint.
struct HfTensor {
  enum class Source {
    kParam,   // the whole of our parameter `param`, same shape
    kExpert,  // expert `expert` of our packed [E, a, b] parameter `param`, transposed to [b, a]
    kZero,    // no counterpart in ours; exact only when all zero (Qwen2-MoE's q/k/v biases and
              // shared-expert down-projection): export writes zeros, import requires them
    kUnused,  // no counterpart, and no effect once the kZero tensors are zero (the rest of
              // Qwen2-MoE's shared expert): export writes zeros, import ignores the values
  };
  std::string name;            // HF name
  std::vector<int64_t> shape;  // HF shape
  Source source = Source::kParam;
  std::string param;  // ours, for kParam and kExpert
  int64_t expert = -1;
};

// Every tensor of the checkpoint, in file order.
std::vector<HfTensor> hf_tensors(const ModelConfig& m);

}  // namespace moe
