// moe_router = "expert_choice" against its definition (Zhou et al. 2022),
// with the softmax and each expert's choice computed here in double:
// scores S = softmax(x Wg^T) over the experts; expert e takes the C tokens of
// the micro-batch with the highest S[n, e] (ties: the earlier token), C =
// ceil(capacity_factor x tokens x top_k / num_experts), with weight S[n, e].
// In generation a token goes to its top_k experts by score, weighted by those
// scores. The gradient is checked with the whole model against finite
// differences in model_test, and the layouts in tests/parallel.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "src/config/derived.h"
#include "src/model/moe/routers.h"
#include "src/model/param_names.h"
#include "tests/model/tiny_run.h"

namespace {

constexpr int64_t D = 8, E = 4, kLayer = 1;

moe::ModelConfig tiny_expert_choice(const std::string& capacity_factor) {
  return moe::test::model_of({"model.dim=8", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1",
                              "model.vocab_size=16", "model.ffn_hidden_dim=16", "model.max_seq_len=8",
                              "model.init_std=0.5", "model.num_experts=4", "model.moe_top_k=2", "model.moe_frequency=1",
                              "model.moe_router=expert_choice", "model.moe_capacity_factor=" + capacity_factor,
                              "train.seq_len=8"});
}

// The router of block kLayer over N random tokens (decoding: N = 1, one at a time).
struct OneRouter {
  moe::ModelConfig model;
  moe::TensorPool pool;
  moe::ParamStore params;
  moe::SharedScratch scratch;
  moe::SavedActivations saved;
  moe::Tensor key, x;
  std::unique_ptr<moe::Router> router;
  int64_t N;

  OneRouter(const std::string& capacity_factor, int64_t tokens, bool decoding)
      : model(tiny_expert_choice(capacity_factor)),
        params(model, pool),
        scratch(pool),
        saved(pool, moe::ActivationCheckpointing::kNone),
        N(tokens) {
    params.init(model, 3);
    key = pool.alloc({moe::noise::kKeyWords}, moe::DType::kI32);
    moe::zero(key);
    router = moe::make_router(model.moe_router, {model, params[moe::param_name::router_gate(kLayer)], N, N, pool,
                                                 scratch, saved, moe::DType::kF32, key, params, kLayer, decoding});
    x = pool.alloc({N, D});
    std::mt19937 gen(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t i = 0; i < N * D; ++i) x.f32()[i] = normal(gen);
  }

  // S = softmax(x Wg^T), [N, E], in double.
  std::vector<double> scores() {
    const float* w = params[moe::param_name::router_gate(kLayer)].value.f32();
    std::vector<double> s(static_cast<size_t>(N * E));
    for (int64_t n = 0; n < N; ++n) {
      double sum = 0;
      for (int64_t e = 0; e < E; ++e) {
        double l = 0;
        for (int64_t d = 0; d < D; ++d) l += static_cast<double>(x.f32()[n * D + d]) * w[e * D + d];
        sum += s[n * E + e] = std::exp(l);
      }
      for (int64_t e = 0; e < E; ++e) s[n * E + e] /= sum;
    }
    return s;
  }
};

}  // namespace

TEST_CASE("expert_choice: each expert takes the C tokens that score it highest, with the score as weight") {
  for (const std::string cf : {"0.5", "1.0", "1.5"}) {
    DYNAMIC_SECTION("capacity factor " << cf) {
      constexpr int64_t N = 12;
      OneRouter r(cf, N, false);
      const int64_t C = moe::moe_capacity(r.model, N, true);
      REQUIRE(C == static_cast<int64_t>(std::ceil(std::stod(cf) * N * 2 / E)));
      REQUIRE(moe::moe_slots(r.model) == E);
      r.router->forward(r.x, true, 1.0f);
      moe::Tensor offsets = r.pool.alloc({E + 1}, moe::DType::kI32), row_pair = r.pool.alloc({N * E}, moe::DType::kI32),
                  pair_row = r.pool.alloc({N, E}, moe::DType::kI32);
      moe::ops::moe_plan(offsets, row_pair, pair_row, r.router->topk_idx(), C, r.router->capacity_priority());

      const std::vector<double> s = r.scores();
      for (int64_t e = 0; e < E; ++e) {
        CHECK(offsets.i32()[e + 1] - offsets.i32()[e] == C);  // every expert computes exactly C rows
        std::vector<int64_t> tokens(N);
        std::iota(tokens.begin(), tokens.end(), 0);
        std::stable_sort(tokens.begin(), tokens.end(),
                         [&](int64_t a, int64_t b) { return s[a * E + e] > s[b * E + e]; });
        std::vector<bool> chosen(N, false);
        for (int64_t i = 0; i < C; ++i) chosen[tokens[i]] = true;
        for (int64_t n = 0; n < N; ++n) {
          for (int64_t k = 0; k < E; ++k) {  // every token offers itself to every expert once
            if (r.router->topk_idx().i32()[n * E + k] != e) continue;
            INFO("expert " << e << ", token " << n);
            CHECK((pair_row.i32()[n * E + k] >= 0) == chosen[n]);
            CHECK(r.router->topk_w().f32()[n * E + k] == Approx(s[n * E + e]).epsilon(1e-6));
          }
        }
      }
    }
  }
}

TEST_CASE("expert_choice in generation: a token's top_k experts by score, weighted by their scores") {
  OneRouter r("1.0", 1, true);
  r.router->forward(r.x, false, 0.0f);
  const std::vector<double> s = r.scores();
  std::vector<int32_t> order(E);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return s[a] > s[b]; });
  REQUIRE(r.router->topk_idx().numel() == 2);
  for (int64_t k = 0; k < 2; ++k) {
    CHECK(r.router->topk_idx().i32()[k] == order[k]);
    CHECK(r.router->topk_w().f32()[k] == Approx(s[order[k]]).epsilon(1e-6));  // not renormalised
  }
}

TEST_CASE("expert_choice trains with every expert at its capacity and nothing dropped") {
  moe::test::TinyRun run(tiny_expert_choice("1.0"), 2, 8, 3, 9);
  run.train_loss();
  const int64_t C = moe::moe_capacity(run.model, 16, true);  // ceil(1.0 x 16 x 2 / 4) = 8
  REQUIRE(C == 8);
  for (const moe::MoEStepStats& s : run.net.read_moe_step_stats()) {
    CHECK(s.kept_per_expert == std::vector<int64_t>(E, C));
    CHECK(s.routed_per_expert == s.kept_per_expert);
    CHECK(s.pairs == E * C);
    CHECK(s.dropped == 0);
  }
}

TEST_CASE("expert_choice needs a capacity, dropping, and at most 32 experts: each refused in one line") {
  CHECK_THROWS_WITH(tiny_expert_choice("0"),
                    Catch::Contains("model.moe_capacity_factor = 0") && Catch::Contains("expert_choice"));
  CHECK_THROWS_WITH(moe::test::model_of({"model.num_experts=4", "model.moe_router=expert_choice",
                                         "model.moe_capacity_factor=1", "model.moe_drop_tokens=false"}),
                    Catch::Contains("model.moe_drop_tokens = false") && Catch::Contains("set moe_drop_tokens = true"));
  CHECK_THROWS_WITH(
      moe::test::model_of({"model.num_experts=64", "model.moe_router=expert_choice", "model.moe_capacity_factor=1"}),
      Catch::Contains("model.num_experts = 64") && Catch::Contains("at most 32"));
}
