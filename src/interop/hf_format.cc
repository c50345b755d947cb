#include "src/interop/hf_format.h"

#include <map>

#include "src/config/derived.h"
#include "src/core/user_error.h"
#include "src/model/param_names.h"
#include "src/model/param_spec.h"

namespace moe {
namespace {

nlohmann::ordered_json common_config(const ModelConfig& m, const std::string& arch, const std::string& type) {
  nlohmann::ordered_json c;
  c["architectures"] = {arch};
  c["model_type"] = type;
  c["hidden_size"] = m.dim;
  c["num_hidden_layers"] = m.n_layers;
  c["num_attention_heads"] = m.n_heads;
  c["num_key_value_heads"] = kv_heads(m);
  c["head_dim"] = head_dim(m);
  c["vocab_size"] = m.vocab_size;
  c["max_position_embeddings"] = m.max_seq_len;
  c["rms_norm_eps"] = m.norm_eps;
  c["rope_theta"] = m.rope_theta;
  c["hidden_act"] = "silu";
  c["tie_word_embeddings"] = m.tie_embeddings;
  c["attention_dropout"] = 0.0;
  c["initializer_range"] = m.init_std;
  c["torch_dtype"] = "float32";
  return c;
}

}  // namespace

std::string hf_architecture(const ModelConfig& m, const std::string& flag) {
  if (m.num_experts == 0) return "LlamaForCausalLM";
  // noisy_topk routes as softmax_topk outside training: its noise gates are
  // training-only, not exported, and kept as they are on import.
  if (m.moe_router != "softmax_topk" && m.moe_router != "noisy_topk") {
    const char* why = m.moe_router == "sigmoid_topk" ? " (DeepSeek-V3's also changes attention)" : "";
    throw UserError(flag + ": model.moe_router = \"" + m.moe_router + "\" has no exact Hugging Face architecture" +
                    why + "; Hugging Face export and import are for softmax_topk and noisy_topk models");
  }
  if (m.moe_shared_experts > 0) {
    throw UserError(flag + ": model.moe_shared_experts = " + std::to_string(m.moe_shared_experts) +
                    " has no exact Hugging Face architecture (Qwen2-MoE gates its shared expert); "
                    "Hugging Face export and import need moe_shared_experts = 0");
  }
  return m.moe_frequency == 1 ? "MixtralForCausalLM" : "Qwen2MoeForCausalLM";
}

nlohmann::ordered_json hf_config(const ModelConfig& m) {
  const std::string arch = hf_architecture(m);
  nlohmann::ordered_json cfg;
  if (arch == "LlamaForCausalLM") {
    cfg = common_config(m, arch, "llama");
    cfg["intermediate_size"] = ffn_hidden(m);
    cfg["attention_bias"] = false;
    cfg["mlp_bias"] = false;
  } else if (arch == "MixtralForCausalLM") {
    cfg = common_config(m, arch, "mixtral");
    cfg["intermediate_size"] = expert_hidden(m);
    cfg["num_local_experts"] = m.num_experts;
    cfg["num_experts_per_tok"] = m.moe_top_k;
    cfg["router_aux_loss_coef"] = m.moe_aux_loss_weight;
    cfg["output_router_logits"] = false;
    cfg["sliding_window"] = nullptr;
  } else {
    cfg = common_config(m, arch, "qwen2_moe");
    cfg["intermediate_size"] = ffn_hidden(m);
    cfg["moe_intermediate_size"] = expert_hidden(m);
    cfg["shared_expert_intermediate_size"] = 1;
    cfg["num_experts"] = m.num_experts;
    cfg["num_experts_per_tok"] = m.moe_top_k;
    cfg["decoder_sparse_step"] = m.moe_frequency;
    cfg["norm_topk_prob"] = true;
    cfg["mlp_only_layers"] = nlohmann::ordered_json::array();
    cfg["qkv_bias"] = true;
    cfg["use_sliding_window"] = false;
    cfg["router_aux_loss_coef"] = m.moe_aux_loss_weight;
    cfg["output_router_logits"] = false;
  }
  return cfg;
}

std::vector<HfTensor> hf_tensors(const ModelConfig& m) {
  using S = HfTensor::Source;
  const bool qwen = hf_architecture(m) == "Qwen2MoeForCausalLM";
  const int64_t D = m.dim, F = expert_hidden(m);
  // Our registry's shapes, by name.
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const ParamSpec& p : model_param_specs(m)) shapes[p.name] = p.shape;
  std::vector<HfTensor> t;
  auto whole = [&](const std::string& ours, const std::string& hf) {
    t.push_back({hf, shapes.at(ours), S::kParam, ours});
  };
  auto same = [&](const std::string& name) { whole(name, name); };

  // Our names are Hugging Face's (param_names.h) but for the packed experts
  // and, in Qwen2-MoE, the MoE block's prefix.
  same(param_name::embedding());
  for (int64_t i = 0; i < m.n_layers; ++i) {
    const std::string b = param_name::block(i);
    for (const char* n : {"input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
                          "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight"}) {
      same(b + n);
    }
    if (qwen) {
      for (const char* proj : {"q_proj", "k_proj", "v_proj"}) {
        const int64_t out = shapes.at(b + "self_attn." + proj + ".weight")[0];
        t.push_back({b + "self_attn." + proj + ".bias", {out}, S::kZero, ""});
      }
    }
    if (!is_moe_block(m, i)) {
      for (const char* n : {"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"}) same(b + n);
      continue;
    }
    const std::string out = qwen ? b + "mlp." : param_name::moe(i);
    whole(param_name::router_gate(i), out + "gate.weight");
    // Ours packed: w1, w3 [E, D, F] and w2 [E, F, D]; HF per expert [out, in]: w1, w3 [F, D] and w2 [D, F].
    for (int64_t e = 0; e < m.num_experts; ++e) {
      const std::string x = out + "experts." + std::to_string(e) + ".";
      t.push_back(
          {x + (qwen ? "gate_proj.weight" : "w1.weight"), {F, D}, S::kExpert, param_name::routed_experts(i, "w1"), e});
      t.push_back(
          {x + (qwen ? "up_proj.weight" : "w3.weight"), {F, D}, S::kExpert, param_name::routed_experts(i, "w3"), e});
      t.push_back(
          {x + (qwen ? "down_proj.weight" : "w2.weight"), {D, F}, S::kExpert, param_name::routed_experts(i, "w2"), e});
    }
    if (qwen) {
      // The architecture's mandatory shared expert (intermediate size 1), made to add exactly 0.
      t.push_back({out + "shared_expert.gate_proj.weight", {1, D}, S::kUnused, ""});
      t.push_back({out + "shared_expert.up_proj.weight", {1, D}, S::kUnused, ""});
      t.push_back({out + "shared_expert.down_proj.weight", {D, 1}, S::kZero, ""});
      t.push_back({out + "shared_expert_gate.weight", {1, D}, S::kUnused, ""});
    }
  }
  same(param_name::final_norm());
  if (!m.tie_embeddings) same(param_name::lm_head());
  return t;
}

}  // namespace moe
