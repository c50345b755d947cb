// moe_expert_dropout against its definition (Switch's expert dropout): in
// training each routed expert's hidden activation h = silu(x W1) * (x W3) is
// multiplied by a keep mask, 1 / (1 - p) with probability 1 - p and 0
// otherwise, drawn per (token, slot) pair and hidden unit from the
// micro-batch's noise key, so the mask follows the token whatever the
// experts' row order; y = (h * mask) W2. Checked on GroupedSwiGLU with rows
// in a shuffled pair order against those formulas computed here. The
// gradient is checked with the whole model in model_test, the same masks at
// every layout without expert parallelism in tests/parallel.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "src/model/ffn.h"
#include "tests/model/tiny_run.h"

TEST_CASE("expert dropout masks each expert's hidden activation per (token, slot) pair") {
  const moe::ModelConfig m =
      moe::test::model_of({"model.dim=8", "model.n_layers=1", "model.n_heads=2", "model.vocab_size=16",
                           "model.ffn_hidden_dim=16", "model.max_seq_len=8", "train.seq_len=6"});
  constexpr int64_t D = 8, F = 5, E = 2, M = 6;
  moe::TensorPool pool;
  moe::ParamStore params(m, pool);
  moe::SharedScratch scratch(pool);
  moe::SavedActivations saved(pool, moe::ActivationCheckpointing::kNone);
  const moe::Tensor key = pool.alloc({moe::noise::kKeyWords}, moe::DType::kI32);
  const int32_t words[4] = {3, 0, 7, 2};
  moe::upload(key, words);
  const moe::ModelParallel parallel = moe::ModelParallel::single_process();
  const moe::LayerContext ctx{m, 1, 6, pool, params, parallel, scratch, saved, moe::DType::kF32, key, nullptr};
  moe::GroupedSwiGLU experts(ctx, moe::kRoutedExpertsScratch, M, F, E);

  std::mt19937 gen(4);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto random = [&](std::initializer_list<int64_t> shape) {
    const moe::Tensor t = pool.alloc(shape);
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = normal(gen);
    return t;
  };
  const moe::Tensor x = random({M, D}), w1 = random({E, D, F}), w3 = random({E, D, F}), w2 = random({E, F, D});
  const moe::ExpertWeights w{w1, w3, w2, pool.alloc({E, D, F}), pool.alloc({E, D, F}), pool.alloc({E, F, D})};
  const moe::Tensor offsets = pool.alloc({E + 1}, moe::DType::kI32), row_ids = pool.alloc({M, 2}, moe::DType::kI32);
  const int32_t off[E + 1] = {0, 4, 6}, pairs[M] = {5, 3, 0, 1, 2, 4};  // rows sorted by expert, pairs shuffled
  moe::upload(offsets, off);
  for (int64_t r = 0; r < M; ++r) row_ids.i32()[2 * r] = 2, row_ids.i32()[2 * r + 1] = pairs[r];  // micro-batch 2
  const float p = 0.5f;
  const moe::HiddenDropout dropout{row_ids, M, key, 77, {moe::noise::Kind::kKeep, 1 - p, 0}};
  const moe::Tensor out = pool.alloc({M, D});
  experts.forward(out, x, w, offsets, &dropout);

  const uint64_t stream = moe::noise::stream_key(words, 77);
  int64_t dropped = 0;
  for (int64_t r = 0; r < M; ++r) {
    const int64_t e = r < off[1] ? 0 : 1;
    std::vector<double> h(F);
    for (int64_t f = 0; f < F; ++f) {
      double a = 0, b = 0;
      for (int64_t d = 0; d < D; ++d) {
        a += static_cast<double>(x.f32()[r * D + d]) * w1.f32()[(e * D + d) * F + f];
        b += static_cast<double>(x.f32()[r * D + d]) * w3.f32()[(e * D + d) * F + f];
      }
      const double mask = moe::noise::value(
          dropout.keep, stream, moe::noise::first_index(words, M * F) + static_cast<uint64_t>(pairs[r] * F + f));
      REQUIRE((mask == 0.0 || mask == 2.0));
      dropped += mask == 0.0;
      h[f] = a / (1 + std::exp(-a)) * b * mask;
    }
    for (int64_t d = 0; d < D; ++d) {
      double y = 0;
      for (int64_t f = 0; f < F; ++f) y += h[f] * w2.f32()[(e * F + f) * D + d];
      INFO("row " << r << ", dim " << d);
      CHECK(out.f32()[r * D + d] == Approx(y).epsilon(1e-5).margin(1e-5));
    }
  }
  CHECK(dropped > 0);
  CHECK(dropped < M * F);
}
