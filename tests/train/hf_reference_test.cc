// Our model against an outside reference: Hugging Face transformers (float64)
// on tiny Llama, Mixtral and Qwen2-MoE models. Each folder under
// tests/reference/hf/ holds our config, the weights our exporter wrote for it
// (loaded there by transformers), and what transformers computed from them:
// logits, loss, every gradient and three AdamW steps (dev/hf_reference/
// makes them again). Here the weights come in through our Hugging Face
// import, and one process on the CPU must give the same numbers: the loss and
// every gradient element within 1e-5, the logits of the KV-cache decoder
// within 1e-5, and the losses and parameters after three AdamW steps.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "src/checkpoint/safetensors.h"
#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/interop/hf_format.h"
#include "src/interop/import_hf.h"
#include "src/model/decoder.h"
#include "src/model/transformer.h"
#include "src/train/optimizer.h"

namespace {

constexpr double kTolerance = 1e-5;

struct Reference {
  moe::JobConfig cfg;
  std::string dir;
  moe::SafetensorsFile file;

  explicit Reference(const std::string& name)
      : dir("tests/reference/hf/" + name), file(dir + "/reference.safetensors") {
    cfg = moe::load_config_file(dir + "/moe_train.toml", {}).cfg;
    moe::validate_config(cfg);
  }
  std::vector<float> read(const std::string& tensor) const {
    std::vector<float> v(static_cast<size_t>(file.entry(tensor).numel));
    file.read(tensor, v.data());
    return v;
  }
};

// The largest |a - b| over the elements.
double max_difference(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
  return worst;
}

// Our tensor (a parameter's value or gradient) in the Hugging Face form of `t`:
// the whole tensor, or one expert of a packed one, transposed.
std::vector<float> in_hf_form(const moe::HfTensor& t, const moe::Tensor& ours) {
  if (t.source == moe::HfTensor::Source::kParam) return {ours.f32(), ours.f32() + ours.numel()};
  const int64_t a = ours.shape[1], b = ours.shape[2];  // ours [E, a, b], HF [b, a]
  const float* expert = ours.f32() + t.expert * a * b;
  std::vector<float> out(static_cast<size_t>(a * b));
  for (int64_t i = 0; i < a; ++i)
    for (int64_t j = 0; j < b; ++j) out[static_cast<size_t>(j * a + i)] = expert[i * b + j];
  return out;
}

bool has_counterpart(const moe::HfTensor& t) {
  return t.source == moe::HfTensor::Source::kParam || t.source == moe::HfTensor::Source::kExpert;
}

void check_against_transformers(const std::string& name) {
  const Reference ref(name);
  const moe::ModelConfig& m = ref.cfg.model;
  const int64_t B = ref.cfg.train.batch_size, T = ref.cfg.train.seq_len;
  moe::TensorPool pool;
  moe::ParamStore params(m, pool);
  moe::import_hf(m, ref.dir, params);
  moe::Transformer net(m, B, T, 0, pool, params);

  const std::vector<float> tokens = ref.read("tokens");  // [B, T + 1]
  REQUIRE(tokens.size() == static_cast<size_t>(B * (T + 1)));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      net.inputs().i32()[b * T + t] = static_cast<int32_t>(tokens[static_cast<size_t>(b * (T + 1) + t)]);
      net.targets().i32()[b * T + t] = static_cast<int32_t>(tokens[static_cast<size_t>(b * (T + 1) + t + 1)]);
    }
  }

  SECTION("logits, loss and every gradient") {
    params.zero_grads();
    const double loss = net.forward_backward(1.0f);
    CHECK(std::abs(loss - ref.read("loss")[0]) < kTolerance);
    for (const moe::HfTensor& t : moe::hf_tensors(m)) {
      if (!has_counterpart(t) || (m.tie_embeddings && t.name == "lm_head.weight")) continue;
      INFO(t.name);
      CHECK(max_difference(in_hf_form(t, params[t.param].grad), ref.read("grad." + t.name)) < kTolerance);
    }
    // The logits, token by token through the generation decoder.
    moe::Decoder decoder(m, params, {}, T, pool);
    const std::vector<float> logits = ref.read("logits");  // [B, T, V]
    const auto V = static_cast<size_t>(m.vocab_size);
    double worst = 0;
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < T; ++t) {
        const std::vector<float>& ours = decoder.step(net.inputs().i32()[b * T + t], t);
        const auto at = static_cast<size_t>(b * T + t) * V;
        worst = std::max(worst, max_difference(ours, {logits.begin() + at, logits.begin() + at + V}));
      }
    }
    CHECK(worst < kTolerance);
  }

  SECTION("three AdamW steps on the same batch") {
    moe::Optimizer optimizer(ref.cfg.optimizer, params, pool);
    const std::vector<float> losses = ref.read("adamw.losses");
    for (int64_t step = 1; step <= 3; ++step) {
      INFO("step " << step);
      params.zero_grads();
      net.reset_moe_step_stats();
      const double loss = net.forward_backward(1.0f);
      CHECK(std::abs(loss - losses[static_cast<size_t>(step - 1)]) < kTolerance);
      optimizer.step(ref.cfg.optimizer.lr, /*clip_scale=*/1.0, step);
    }
    for (const moe::HfTensor& t : moe::hf_tensors(m)) {
      if (!has_counterpart(t) || (m.tie_embeddings && t.name == "lm_head.weight")) continue;
      INFO(t.name);
      CHECK(max_difference(in_hf_form(t, params[t.param].value), ref.read("adamw.after3." + t.name)) < kTolerance);
    }
  }
}

}  // namespace

TEST_CASE("a dense Llama equals transformers' LlamaForCausalLM") { check_against_transformers("llama"); }

TEST_CASE("an MoE in every block equals transformers' MixtralForCausalLM") { check_against_transformers("mixtral"); }

TEST_CASE("an MoE every second block equals transformers' Qwen2MoeForCausalLM") {
  check_against_transformers("qwen2_moe");
}
