#include "src/interop/hf_config_check.h"

#include <vector>

#include "src/core/user_error.h"
#include "src/interop/hf_format.h"

namespace moe {
namespace {

struct Rule {
  const char* key;
  std::string ours;                                              // what it is in our config, for the message
  std::string fix;                                               // "" = set `ours` to the checkpoint's value
  nlohmann::json fallback = nlohmann::json::value_t::discarded;  // HF's default when absent; discarded = required
};

constexpr auto kRequired = nlohmann::json::value_t::discarded;

std::vector<Rule> rules(const std::string& arch, const nlohmann::json& file) {
  const bool mixtral = arch == "MixtralForCausalLM";
  const std::string expert_hidden = "the expert hidden size: model.ffn_hidden_dim x model.moe_expert_ffn_multiplier";
  const std::string no_exact = "; this checkpoint cannot be imported exactly";
  return {
      {"hidden_size", "model.dim", ""},
      {"num_hidden_layers", "model.n_layers", ""},
      {"num_attention_heads", "model.n_heads", ""},
      {"num_key_value_heads", "model.n_kv_heads", "", file.value("num_attention_heads", nlohmann::json())},
      {"head_dim", "model.dim / model.n_heads", "set model.dim and model.n_heads so that it matches",
       file.value("head_dim", nlohmann::json())},  // optional in HF: checked when present
      {"vocab_size", "model.vocab_size", ""},
      {"intermediate_size", mixtral ? expert_hidden : "model.ffn_hidden_dim",
       mixtral ? "set model.ffn_hidden_dim to it with model.moe_expert_ffn_multiplier = 1" : ""},
      {"moe_intermediate_size", expert_hidden, "set model.moe_expert_ffn_multiplier so that it matches"},
      {"num_local_experts", "model.num_experts", ""},
      {"num_experts", "model.num_experts", ""},
      {"num_experts_per_tok", "model.moe_top_k", ""},
      {"decoder_sparse_step", "model.moe_frequency", "", 1},
      {"tie_word_embeddings", "model.tie_embeddings", "", false},
      {"rms_norm_eps", "model.norm_eps", ""},
      {"rope_theta", "model.rope_theta", ""},
      {"hidden_act", "SwiGLU's activation", "only silu models can be imported", "silu"},
      {"attention_bias", "attention biases", "this model has none" + no_exact, false},
      {"mlp_bias", "MLP biases", "this model has none" + no_exact, false},
      {"norm_topk_prob", "the router's rule", "softmax_topk renormalises the top-k weights" + no_exact, false},
      {"shared_expert_intermediate_size", "the inert shared expert moe_train writes",
       "a real Qwen2-MoE shared expert has no equivalent here" + no_exact},
      {"mlp_only_layers", "the MoE blocks: every model.moe_frequency-th",
       "a list of dense blocks has no equivalent here" + no_exact, nlohmann::json::array()},
  };
}

std::string text(const nlohmann::json& j) { return j.dump(); }

// A sliding window narrower than the longest sequence changes attention, which is full here.
void check_window(const ModelConfig& m, const std::string& arch, const nlohmann::json& file, const std::string& path) {
  if (arch == "LlamaForCausalLM") return;
  const nlohmann::json window = file.value("sliding_window", nlohmann::json());
  // Mixtral applies sliding_window whenever it is set; Qwen2-MoE only with use_sliding_window.
  const bool used = arch == "MixtralForCausalLM" ? true : file.value("use_sliding_window", false);
  if (used && window.is_number() && window.get<double>() < static_cast<double>(m.max_seq_len)) {
    throw UserError(path + ": sliding_window = " + text(window) +
                    " is shorter than model.max_seq_len = " + std::to_string(m.max_seq_len) +
                    " and attention here is full; set model.max_seq_len <= " + text(window) +
                    " or import a checkpoint without a sliding window");
  }
}

}  // namespace

void check_hf_config(const ModelConfig& m, const nlohmann::json& file, const std::string& path) {
  const std::string arch = hf_architecture(m, "--init-from-hf");
  if (!file.is_object()) throw UserError(path + ": not a JSON object; it is not a Hugging Face config.json");
  const nlohmann::json archs = file.value("architectures", nlohmann::json());
  const std::string theirs =
      archs.is_array() && !archs.empty() && archs[0].is_string() ? archs[0].get<std::string>() : "";
  if (theirs != arch) {
    throw UserError(path + ": architectures = " + (theirs.empty() ? "(none)" : theirs) + ", this model is " + arch +
                    " (model.num_experts = " + std::to_string(m.num_experts) +
                    ", model.moe_frequency = " + std::to_string(m.moe_frequency) +
                    "); set them to the checkpoint's (0: Llama, 1: Mixtral, >1: Qwen2-MoE) or import a " + arch);
  }
  const nlohmann::ordered_json ours = hf_config(m);
  for (const Rule& r : rules(arch, file)) {
    if (!ours.contains(r.key)) continue;                          // not a key of this architecture
    if (r.fallback.is_null() && !file.contains(r.key)) continue;  // optional, and absent
    if (!file.contains(r.key) && r.fallback.type() == kRequired) {
      throw UserError(path + ": has no " + r.key + " (this model's is " + text(ours[r.key]) + ", " + r.ours +
                      "); add the checkpoint's value to the file");
    }
    const nlohmann::json value = file.contains(r.key) ? file[r.key] : r.fallback;
    if (value != nlohmann::json(ours[r.key])) {
      throw UserError(
          path + ": " + r.key + " = " + text(value) + ", this model's is " + text(ours[r.key]) + " (" + r.ours + "); " +
          (r.fix.empty() ? "set " + r.ours + " = " + text(value) + ", or import a checkpoint of this shape" : r.fix));
    }
  }
  if (file.contains("rope_scaling") && !file["rope_scaling"].is_null()) {
    throw UserError(path + ": rope_scaling = " + text(file["rope_scaling"]) +
                    ", and RoPE is unscaled here; import a checkpoint without rope_scaling");
  }
  check_window(m, arch, file, path);
}

}  // namespace moe
