// moe_router_jitter against its definition (Switch's multiplicative jitter,
// Megatron's moe_input_jitter_eps): in training the router computes its
// logits from x * u, u = uniform(1 - eps, 1 + eps) per element drawn from the
// micro-batch's noise key; evaluation routes x itself. Checked against a plain
// softmax top-k over (x * u) Wr^T computed here. Its gradient is checked with
// the whole model against finite differences in model_test.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "src/model/layer_common.h"
#include "src/model/moe/routers.h"
#include "src/model/param_names.h"
#include "tests/model/tiny_run.h"

namespace {

constexpr int64_t N = 6, D = 8, E = 4, K = 2;

// The experts and weights of plain softmax top-k (renormalised) over x Wr^T.
void reference_routing(const std::vector<float>& x, const float* w, std::vector<int32_t>& idx,
                       std::vector<float>& weight) {
  for (int64_t n = 0; n < N; ++n) {
    std::vector<double> p(E);
    for (int64_t e = 0; e < E; ++e) {
      double s = 0;
      for (int64_t d = 0; d < D; ++d) s += static_cast<double>(x[n * D + d]) * w[e * D + d];
      p[e] = s;
    }
    const double top = *std::max_element(p.begin(), p.end());
    for (double& v : p) v = std::exp(v - top);
    std::vector<int32_t> order(E);
    for (int32_t e = 0; e < E; ++e) order[e] = e;
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
    const double kept = p[order[0]] + p[order[1]];
    for (int64_t k = 0; k < K; ++k) {
      idx[n * K + k] = order[k];
      weight[n * K + k] = static_cast<float>(p[order[k]] / kept);
    }
  }
}

}  // namespace

TEST_CASE("router jitter multiplies the router's input by uniform(1 - eps, 1 + eps) in training only") {
  const moe::ModelConfig m = moe::test::model_of(
      {"model.dim=8", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1", "model.vocab_size=16",
       "model.ffn_hidden_dim=16", "model.max_seq_len=8", "model.init_std=0.5", "model.num_experts=4",
       "model.moe_top_k=2", "model.moe_frequency=1", "model.moe_router_jitter=0.3", "train.seq_len=6"});
  moe::TensorPool pool;
  moe::ParamStore params(m, pool);
  params.init(m, 3);
  moe::SharedScratch scratch(pool);
  moe::SavedActivations saved(pool, moe::ActivationCheckpointing::kNone);
  const moe::Tensor key = pool.alloc({moe::noise::kKeyWords}, moe::DType::kI32);
  const int32_t words[4] = {9, 0, 2, 5};
  moe::upload(key, words);
  const int64_t layer = 1;
  moe::Param& gate = params[moe::param_name::router_gate(layer)];
  const auto router =
      moe::make_router(m.moe_router, {m, gate, N, 6, pool, scratch, saved, moe::DType::kF32, key, layer});

  const moe::Tensor x = pool.alloc({N, D});
  std::mt19937 gen(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < N * D; ++i) x.f32()[i] = normal(gen);
  std::vector<float> plain(x.f32(), x.f32() + N * D), jittered = plain;
  const uint64_t stream = moe::noise::stream_key(words, moe::noise_stream(layer, moe::NoiseUse::kRouterJitter));
  const moe::noise::Distribution u{moe::noise::Kind::kUniform, 0.7f, 1.3f};
  int64_t moved = 0;
  for (int64_t i = 0; i < N * D; ++i) {
    const float f = moe::noise::value(u, stream, moe::noise::first_index(words, N * D) + static_cast<uint64_t>(i));
    REQUIRE((f > 0.7f && f < 1.3f));
    jittered[i] *= f;
    moved += f != 1.0f;
  }
  CHECK(moved == N * D);

  for (const bool training : {true, false}) {
    INFO((training ? "training" : "evaluation"));
    router->forward(x, training, 1.0f);
    std::vector<int32_t> idx(N * K);
    std::vector<float> weight(N * K);
    reference_routing(training ? jittered : plain, gate.value.f32(), idx, weight);
    for (int64_t i = 0; i < N * K; ++i) {
      CHECK(router->topk_idx().i32()[i] == idx[i]);
      CHECK(router->topk_w().f32()[i] == Approx(weight[i]).epsilon(1e-5));
    }
  }
  // The input itself is left as it was.
  CHECK(std::equal(plain.begin(), plain.end(), x.f32()));
}
