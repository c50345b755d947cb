// The routers' noise against its definitions, with plain softmax top-k
// (renormalised) computed here as the reference:
// - moe_router_jitter (Switch's multiplicative jitter, Megatron's
//   moe_input_jitter_eps): in training the logits are (x * u) Wg^T, u uniform
//   in (1 - eps, 1 + eps) per element, drawn from the micro-batch's noise key;
// - moe_router = "noisy_topk" (Shazeer et al. 2017): in training the logits
//   are x Wg^T + z * softplus(x Wn^T), z standard normal per token and expert,
//   Wn the block's gate_noise.weight.
// Evaluation routes x Wg^T alone. The gradients are checked with the whole
// model against finite differences in model_test, and the same draws at every
// layout in tests/parallel.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "src/model/layer_common.h"
#include "src/model/moe/routers.h"
#include "src/model/param_names.h"
#include "tests/model/tiny_run.h"

namespace {

constexpr int64_t N = 6, D = 8, E = 4, K = 2, kLayer = 1;

// One router of a tiny model (block kLayer), its noise key and a random input x.
struct OneRouter {
  moe::ModelConfig model;
  moe::TensorPool pool;
  moe::ParamStore params;
  moe::SharedScratch scratch;
  moe::SavedActivations saved;
  int32_t words[moe::noise::kKeyWords] = {9, 0, 2, 5};  // seed, step, micro-batch
  moe::Tensor key, x;
  std::unique_ptr<moe::Router> router;

  explicit OneRouter(const std::string& routing)
      : model(moe::test::model_of({"model.dim=8", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1",
                                   "model.vocab_size=16", "model.ffn_hidden_dim=16", "model.max_seq_len=8",
                                   "model.init_std=0.5", "model.num_experts=4", "model.moe_top_k=2",
                                   "model.moe_frequency=1", routing, "train.seq_len=6"})),
        params(model, pool),
        scratch(pool),
        saved(pool, moe::ActivationCheckpointing::kNone) {
    params.init(model, 3);
    key = pool.alloc({moe::noise::kKeyWords}, moe::DType::kI32);
    moe::upload(key, words);
    router = moe::make_router(model.moe_router,
                              {model, gate(), N, 6, pool, scratch, saved, moe::DType::kF32, key, params, kLayer});
    x = pool.alloc({N, D});
    std::mt19937 gen(1);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t i = 0; i < N * D; ++i) x.f32()[i] = normal(gen);
  }

  moe::Param& gate() { return params[moe::param_name::router_gate(kLayer)]; }
  // Draw i of the block's stream for `use`, over a micro-batch of n values.
  float draw(moe::NoiseUse use, const moe::noise::Distribution& d, int64_t n, int64_t i) const {
    const uint64_t stream = moe::noise::stream_key(words, moe::noise_stream(kLayer, use));
    return moe::noise::value(d, stream, moe::noise::first_index(words, n) + static_cast<uint64_t>(i));
  }

  // The router's choice against softmax top-k over `logits` [N, E].
  void check_routes(bool training, const std::vector<double>& logits) {
    router->forward(x, training, 1.0f);
    for (int64_t n = 0; n < N; ++n) {
      std::vector<int32_t> order(E);
      for (int32_t e = 0; e < E; ++e) order[e] = e;
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t b) { return logits[n * E + a] > logits[n * E + b]; });
      const double second = std::exp(logits[n * E + order[1]] - logits[n * E + order[0]]);
      for (int64_t k = 0; k < K; ++k) {
        CHECK(router->topk_idx().i32()[n * K + k] == order[k]);
        CHECK(router->topk_w().f32()[n * K + k] == Approx((k == 0 ? 1.0 : second) / (1.0 + second)).epsilon(1e-5));
      }
    }
  }
};

// x' W^T for x' [N, D] and W [E, D].
std::vector<double> logits_of(const std::vector<float>& x, const float* w) {
  std::vector<double> out(N * E);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t e = 0; e < E; ++e) {
      double s = 0;
      for (int64_t d = 0; d < D; ++d) s += static_cast<double>(x[n * D + d]) * w[e * D + d];
      out[n * E + e] = s;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("router jitter multiplies the router's input by uniform(1 - eps, 1 + eps) in training only") {
  OneRouter r("model.moe_router_jitter=0.3");
  const std::vector<float> plain(r.x.f32(), r.x.f32() + N * D);
  std::vector<float> jittered = plain;
  for (int64_t i = 0; i < N * D; ++i) {
    const float u = r.draw(moe::NoiseUse::kRouterJitter, {moe::noise::Kind::kUniform, 0.7f, 1.3f}, N * D, i);
    REQUIRE((u > 0.7f && u < 1.3f && u != 1.0f));
    jittered[i] *= u;
  }
  {
    INFO("training");
    r.check_routes(true, logits_of(jittered, r.gate().value.f32()));
  }
  {
    INFO("evaluation");
    r.check_routes(false, logits_of(plain, r.gate().value.f32()));
  }
  CHECK(std::equal(plain.begin(), plain.end(), r.x.f32()));  // the input itself is left as it was
}

TEST_CASE("noisy_topk routes x Wg^T + z * softplus(x Wn^T) in training and x Wg^T in evaluation") {
  OneRouter r("model.moe_router=noisy_topk");
  const moe::Param& noise_gate = r.params[moe::param_name::router_noise_gate(kLayer)];
  CHECK(noise_gate.spec.shape == std::vector<int64_t>{E, D});
  const std::vector<float> x(r.x.f32(), r.x.f32() + N * D);
  const std::vector<double> clean = logits_of(x, r.gate().value.f32()), noise = logits_of(x, noise_gate.value.f32());
  std::vector<double> noisy(N * E);
  int64_t changed_order = 0;
  for (int64_t i = 0; i < N * E; ++i) {
    const double z = r.draw(moe::NoiseUse::kRouterNoise, {moe::noise::Kind::kNormal, 0, 0}, N * E, i);
    noisy[i] = clean[i] + z * std::log1p(std::exp(noise[i]));
  }
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t e = 1; e < E; ++e) {
      changed_order += (clean[n * E + e] > clean[n * E]) != (noisy[n * E + e] > noisy[n * E]);
    }
  }
  CHECK(changed_order > 0);  // the noise is large enough here to change some choices
  {
    INFO("training");
    r.check_routes(true, noisy);
  }
  {
    INFO("evaluation");
    r.check_routes(false, clean);
  }
}

TEST_CASE("outside training noisy_topk is softmax_topk: the same weights evaluate to the same loss, bit for bit") {
  std::vector<double> losses;
  for (const std::string router : {"softmax_topk", "noisy_topk"}) {
    moe::test::TinyRun run(moe::test::model_of({"model.dim=16", "model.n_layers=2", "model.n_heads=2",
                                                "model.n_kv_heads=1", "model.vocab_size=29", "model.ffn_hidden_dim=24",
                                                "model.max_seq_len=8", "model.init_std=0.3", "model.num_experts=4",
                                                "model.moe_top_k=2", "model.moe_router=" + router, "train.seq_len=6"}),
                           2, 6, 11, 5);
    losses.push_back(run.net.evaluate());  // initial weights drawn by name: the gates and experts are the same
  }
  CHECK(losses[0] == losses[1]);
}
