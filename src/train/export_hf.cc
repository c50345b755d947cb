#include "src/train/export_hf.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "src/config/derived.h"
#include "src/core/user_error.h"
#include "src/train/safetensors.h"

namespace moe {
namespace {

// A [rows, cols] row-major matrix (or slice of a packed tensor) transposed: HF
// linears are [out, in], our packed experts [in, out].
std::vector<float> transposed(const float* src, int64_t rows, int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) out[static_cast<size_t>(c * rows + r)] = src[r * cols + c];
  }
  return out;
}

SafetensorsEntry whole(const Param& p, const std::string& name) {
  return {name, p.spec.shape, std::vector<float>(p.value.f32(), p.value.f32() + p.value.numel())};
}

std::string block(int64_t i) { return "model.layers." + std::to_string(i) + "."; }

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

std::string hf_architecture(const ModelConfig& m) {
  if (m.num_experts == 0) return "LlamaForCausalLM";
  if (m.moe_router != "softmax_topk") {
    throw UserError("--export-hf: model.moe_router = \"" + m.moe_router +
                    "\" has no exact Hugging Face architecture (DeepSeek-V3's also changes attention); "
                    "export is only for softmax_topk models");
  }
  if (m.moe_shared_experts > 0) {
    throw UserError("--export-hf: model.moe_shared_experts = " + std::to_string(m.moe_shared_experts) +
                    " has no exact Hugging Face architecture (Qwen2-MoE gates its shared expert); "
                    "export needs moe_shared_experts = 0");
  }
  return m.moe_frequency == 1 ? "MixtralForCausalLM" : "Qwen2MoeForCausalLM";
}

void export_hf(const ModelConfig& m, const ParamStore& params, const std::string& dir) {
  const std::string arch = hf_architecture(m);
  const bool qwen = arch == "Qwen2MoeForCausalLM";
  const int64_t D = m.dim, F = expert_hidden(m);

  std::vector<SafetensorsEntry> tensors;
  tensors.push_back(whole(params["model.embed_tokens.weight"], "model.embed_tokens.weight"));
  for (int64_t i = 0; i < m.n_layers; ++i) {
    const std::string b = block(i);
    for (const char* n : {"input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
                          "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight"}) {
      tensors.push_back(whole(params[b + n], b + n));
    }
    if (qwen) {
      for (const char* proj : {"q_proj", "k_proj", "v_proj"}) {
        const Param& w = params[b + "self_attn." + proj + ".weight"];
        tensors.push_back({b + "self_attn." + proj + ".bias", {w.spec.shape[0]}, std::vector<float>(w.spec.shape[0])});
      }
    }
    if (!is_moe_block(m, i)) {
      for (const char* n : {"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"}) {
        tensors.push_back(whole(params[b + n], b + n));
      }
      continue;
    }
    const std::string moe = b + "block_sparse_moe.";
    const std::string out = qwen ? b + "mlp." : moe;
    tensors.push_back(whole(params[moe + "gate.weight"], out + "gate.weight"));
    const Param &w1 = params[moe + "experts.w1"], &w3 = params[moe + "experts.w3"], &w2 = params[moe + "experts.w2"];
    for (int64_t e = 0; e < m.num_experts; ++e) {
      const std::string x = out + "experts." + std::to_string(e) + ".";
      const float* p1 = w1.value.f32() + e * D * F;
      const float* p3 = w3.value.f32() + e * D * F;
      const float* p2 = w2.value.f32() + e * F * D;
      tensors.push_back({x + (qwen ? "gate_proj.weight" : "w1.weight"), {F, D}, transposed(p1, D, F)});
      tensors.push_back({x + (qwen ? "up_proj.weight" : "w3.weight"), {F, D}, transposed(p3, D, F)});
      tensors.push_back({x + (qwen ? "down_proj.weight" : "w2.weight"), {D, F}, transposed(p2, F, D)});
    }
    if (qwen) {
      // The architecture's mandatory shared expert, made to add exactly 0.
      tensors.push_back({out + "shared_expert.gate_proj.weight", {1, D}, std::vector<float>(D)});
      tensors.push_back({out + "shared_expert.up_proj.weight", {1, D}, std::vector<float>(D)});
      tensors.push_back({out + "shared_expert.down_proj.weight", {D, 1}, std::vector<float>(D)});
      tensors.push_back({out + "shared_expert_gate.weight", {1, D}, std::vector<float>(D)});
    }
  }
  tensors.push_back(whole(params["model.norm.weight"], "model.norm.weight"));
  if (!m.tie_embeddings) tensors.push_back(whole(params["lm_head.weight"], "lm_head.weight"));

  nlohmann::ordered_json cfg;
  if (arch == "LlamaForCausalLM") {
    cfg = common_config(m, arch, "llama");
    cfg["intermediate_size"] = ffn_hidden(m);
    cfg["attention_bias"] = false;
    cfg["mlp_bias"] = false;
  } else if (arch == "MixtralForCausalLM") {
    cfg = common_config(m, arch, "mixtral");
    cfg["intermediate_size"] = F;
    cfg["num_local_experts"] = m.num_experts;
    cfg["num_experts_per_tok"] = m.moe_top_k;
    cfg["router_aux_loss_coef"] = m.moe_aux_loss_weight;
    cfg["output_router_logits"] = false;
    cfg["sliding_window"] = nullptr;
  } else {
    cfg = common_config(m, arch, "qwen2_moe");
    cfg["intermediate_size"] = ffn_hidden(m);
    cfg["moe_intermediate_size"] = F;
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

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw UserError("--export-hf " + dir + ": cannot create the folder (" + ec.message() + ")");
  write_safetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  const std::string cfg_path = dir + "/config.json", tmp = cfg_path + ".tmp";
  {
    std::ofstream out(tmp);
    out << cfg.dump(2) << "\n";
    if (!out) throw UserError("--export-hf " + cfg_path + ": cannot be written");
  }
  std::filesystem::rename(tmp, cfg_path, ec);
  if (ec) throw UserError("--export-hf " + cfg_path + ": cannot be renamed into place (" + ec.message() + ")");
}

}  // namespace moe
