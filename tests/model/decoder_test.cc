// Generation's decoder against the training model: feeding a sequence one
// token at a time through the KV cache gives, at every position, the logits
// whose cross-entropy the training model's forward computes over the whole
// sequence; the mean equals Transformer::evaluate's loss. Dense, tied, both
// routers (the sigmoid one with a nonzero balance bias), shared experts.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/model/decoder.h"
#include "src/model/params.h"
#include "src/model/transformer.h"

namespace {

moe::ModelConfig tiny_model(const std::vector<std::string>& overrides) {
  std::vector<std::string> all = {"model.dim=16",        "model.n_layers=3",    "model.n_heads=4",
                                  "model.n_kv_heads=2",  "model.vocab_size=37", "model.ffn_hidden_dim=32",
                                  "model.max_seq_len=9", "model.init_std=0.3",  "train.seq_len=9"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  moe::JobConfig cfg = moe::load_config_text("", "tiny", all).cfg;
  moe::validate_config(cfg);
  moe::fill_derived_defaults(cfg);
  return cfg.model;
}

void check_decoder_matches_forward(const moe::ModelConfig& m) {
  constexpr int64_t T = 9;
  moe::TensorPool pool;
  moe::ParamStore params(m, pool);
  params.init(m, 11);
  moe::Transformer net(m, 1, T, 4, pool, params);
  std::mt19937 gen(3);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(m.vocab_size - 1));
  std::vector<int32_t> tokens(T + 1);
  for (int32_t& t : tokens) t = tok(gen);
  std::copy(tokens.begin(), tokens.end() - 1, net.inputs().i32());
  std::copy(tokens.begin() + 1, tokens.end(), net.targets().i32());
  std::vector<moe::Tensor> biases;
  for (moe::MoELayer* layer : net.moe_layers()) {
    std::vector<float> bias(static_cast<size_t>(m.num_experts));
    for (size_t e = 0; e < bias.size(); ++e) bias[e] = 0.05f * static_cast<float>(e % 3) - 0.04f;
    if (m.moe_router == "sigmoid_topk") moe::upload(layer->router().bias(), bias.data());
    biases.push_back(layer->router().bias());
  }
  const double want = net.evaluate();

  moe::Decoder decoder(m, params, biases, T, pool);
  double sum = 0;
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<float>& logits = decoder.step(tokens[static_cast<size_t>(t)], t);
    double max = -INFINITY, z = 0;
    for (float l : logits) max = std::max(max, static_cast<double>(l));
    for (float l : logits) z += std::exp(l - max);
    sum += max + std::log(z) - logits[static_cast<size_t>(tokens[static_cast<size_t>(t) + 1])];
  }
  const double got = sum / T;
  INFO("decoder " << got << ", training forward " << want);
  CHECK(std::abs(got - want) < 1e-5 * std::abs(want));
}

}  // namespace

TEST_CASE("the decoder's logits give the training forward's loss: dense") {
  check_decoder_matches_forward(tiny_model({}));
}

TEST_CASE("the decoder's logits give the training forward's loss: tied embeddings") {
  check_decoder_matches_forward(tiny_model({"model.tie_embeddings=true"}));
}

TEST_CASE("the decoder's logits give the training forward's loss: softmax top-2 of 4 experts, a shared expert") {
  check_decoder_matches_forward(
      tiny_model({"model.num_experts=4", "model.moe_top_k=2", "model.moe_frequency=2", "model.moe_shared_experts=1"}));
}

TEST_CASE("the decoder's logits give the training forward's loss: sigmoid top-1 with a balance bias, every block") {
  check_decoder_matches_forward(tiny_model(
      {"model.num_experts=4", "model.moe_top_k=1", "model.moe_frequency=1", "model.moe_router=sigmoid_topk"}));
}
