// Hugging Face export: architecture choice, names, shapes, the transposition
// of every packed expert, config.json, refusals; and the safetensors reader's
// bounds checks.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/core/user_error.h"
#include "src/interop/export_hf.h"
#include "src/checkpoint/safetensors.h"
#include "tests/train/small_model.h"
#include "tests/test_support.h"

using Catch::Matchers::Contains;

using moe::test::small_model;

namespace {

// export_hf creates the folder itself: hand it one that does not exist yet.
std::string temp_dir(const std::string& name) {
  const std::string dir = moe::test::fresh_dir(name);
  std::filesystem::remove_all(dir);
  return dir;
}

std::map<std::string, moe::SafetensorsEntry> read_all(const std::string& path) {
  std::map<std::string, moe::SafetensorsEntry> out;
  for (auto& e : moe::read_safetensors(path)) out[e.name] = e;
  return out;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

}  // namespace

TEST_CASE("every-block MoE exports as Mixtral, each expert transposed to [out, in]") {
  const auto m = small_model({"model.num_experts=4", "model.moe_top_k=2", "model.moe_frequency=1"});
  moe::TensorPool pool;
  moe::ParamStore params(m, pool);
  params.init(m, 1);
  const std::string dir = temp_dir("mixtral");
  moe::export_hf(m, params, dir);

  auto t = read_all(dir + "/model.safetensors");
  CHECK(t.size() == 1 + 2 * (6 + 1 + 4 * 3) + 2);  // embed, per block (norms, attn, gate, experts), norm, head
  const auto& w1 = t.at("model.layers.1.block_sparse_moe.experts.3.w1.weight");
  CHECK(w1.shape == std::vector<int64_t>{48, 16});
  const auto& w2 = t.at("model.layers.1.block_sparse_moe.experts.3.w2.weight");
  CHECK(w2.shape == std::vector<int64_t>{16, 48});
  // Ours: w1 [E, D, F], w2 [E, F, D]; HF: w1 [F, D], w2 [D, F].
  const float* ours1 = params["model.layers.1.block_sparse_moe.experts.w1"].value.f32();
  const float* ours2 = params["model.layers.1.block_sparse_moe.experts.w2"].value.f32();
  for (int64_t d = 0; d < 16; ++d) {
    for (int64_t f = 0; f < 48; ++f) {
      REQUIRE(w1.data[f * 16 + d] == ours1[3 * 16 * 48 + d * 48 + f]);
      REQUIRE(w2.data[d * 48 + f] == ours2[3 * 48 * 16 + f * 16 + d]);
    }
  }
  CHECK(t.at("model.layers.0.block_sparse_moe.gate.weight").shape == std::vector<int64_t>{4, 16});
  CHECK(t.count("lm_head.weight") == 1);

  auto cfg = read_json(dir + "/config.json");
  CHECK(cfg["architectures"][0] == "MixtralForCausalLM");
  CHECK(cfg["num_local_experts"] == 4);
  CHECK(cfg["num_experts_per_tok"] == 2);
  CHECK(cfg["intermediate_size"] == 48);
  CHECK(cfg["num_key_value_heads"] == 2);
}

TEST_CASE("MoE every other block exports as Qwen2-MoE with an inert shared expert") {
  const auto m = small_model(
      {"model.num_experts=4", "model.moe_top_k=2", "model.moe_frequency=2", "model.moe_expert_ffn_multiplier=0.5"});
  moe::TensorPool pool;
  moe::ParamStore params(m, pool);
  params.init(m, 1);
  const std::string dir = temp_dir("qwen");
  moe::export_hf(m, params, dir);
  auto t = read_all(dir + "/model.safetensors");
  CHECK(t.count("model.layers.0.mlp.gate_proj.weight") == 1);  // block 0 dense
  CHECK(t.at("model.layers.1.mlp.experts.2.gate_proj.weight").shape == std::vector<int64_t>{32, 16});
  CHECK(t.at("model.layers.1.mlp.gate.weight").shape == std::vector<int64_t>{4, 16});
  for (float x : t.at("model.layers.1.mlp.shared_expert.down_proj.weight").data) CHECK(x == 0.0f);
  for (float x : t.at("model.layers.0.self_attn.q_proj.bias").data) CHECK(x == 0.0f);
  auto cfg = read_json(dir + "/config.json");
  CHECK(cfg["architectures"][0] == "Qwen2MoeForCausalLM");
  CHECK(cfg["decoder_sparse_step"] == 2);
  CHECK(cfg["moe_intermediate_size"] == 32);
  CHECK(cfg["intermediate_size"] == 48);
  CHECK(cfg["norm_topk_prob"] == true);
}

TEST_CASE("a dense model exports as Llama; a tied one has no lm_head") {
  const auto m = small_model({"model.tie_embeddings=true"});
  moe::TensorPool pool;
  moe::ParamStore params(m, pool);
  params.init(m, 1);
  const std::string dir = temp_dir("llama");
  moe::export_hf(m, params, dir);
  auto t = read_all(dir + "/model.safetensors");
  CHECK(t.count("lm_head.weight") == 0);
  CHECK(t.at("model.layers.1.mlp.down_proj.weight").shape == std::vector<int64_t>{16, 48});
  CHECK(read_json(dir + "/config.json")["architectures"][0] == "LlamaForCausalLM");
  CHECK(read_json(dir + "/config.json")["tie_word_embeddings"] == true);
}

TEST_CASE("models no HF architecture represents exactly are refused") {
  CHECK_THROWS_WITH(moe::hf_architecture(small_model({"model.num_experts=4", "model.moe_router=sigmoid_topk"})),
                    Contains("model.moe_router = \"sigmoid_topk\"") && Contains("no exact Hugging Face"));
  CHECK_THROWS_WITH(moe::hf_architecture(small_model({"model.num_experts=4", "model.moe_shared_experts=1"})),
                    Contains("model.moe_shared_experts = 1"));
}

TEST_CASE("the safetensors reader refuses truncated and inconsistent files") {
  const std::string dir = temp_dir("st");
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/a.safetensors";
  moe::write_safetensors(path, {{"x", {2, 3}, {1, 2, 3, 4, 5, 6}}}, {{"format", "pt"}});
  auto back = moe::read_safetensors(path);
  REQUIRE(back.size() == 1);
  CHECK(back[0].data == std::vector<float>{1, 2, 3, 4, 5, 6});

  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size - 4);
  CHECK_THROWS_WITH(moe::read_safetensors(path), Contains("tensor x") && Contains("truncated"));

  std::ofstream(path, std::ios::binary | std::ios::trunc).write("\xff\xff\xff\xff\x00\x00\x00\x00{}", 10);
  CHECK_THROWS_WITH(moe::read_safetensors(path), Contains("header length") && Contains("exceeds the file size"));
  CHECK_THROWS_AS(moe::read_safetensors(dir + "/missing.safetensors"), moe::UserError);
}
