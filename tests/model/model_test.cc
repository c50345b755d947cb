// The whole model on tiny configs: its gradient against finite differences
// (each router, capacity, shared experts, z and sequence losses), learning
// (overfitting one batch), determinism, and layout-independent init.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>

#include "src/config/load.h"
#include "src/config/router_names.h"
#include "src/config/validate.h"
#include "src/core/rng.h"
#include "src/kernels/ops.h"
#include "src/model/params.h"
#include "src/model/transformer.h"
#include "src/train/moe_gradient_scale.h"
#include "src/train/optimizer.h"

namespace {

const std::unique_ptr<moe::Communicator> world = moe::single_process_world();

moe::ModelConfig tiny_model(const std::vector<std::string>& overrides) {
  std::vector<std::string> all = {"model.dim=16",        "model.n_layers=2",    "model.n_heads=4",
                                  "model.n_kv_heads=2",  "model.vocab_size=37", "model.ffn_hidden_dim=32",
                                  "model.max_seq_len=8", "model.init_std=0.2",  "train.seq_len=5"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  moe::JobConfig cfg = moe::load_config_text("", "tiny", all).cfg;
  moe::validate_config(cfg);
  return cfg.model;
}

struct TinyRun {
  moe::ModelConfig model;
  moe::TensorPool pool;
  moe::ParamStore params;
  moe::Transformer net;

  TinyRun(const moe::ModelConfig& m, int64_t B, int64_t T, uint64_t seed)
      : model(m), params(model, pool), net(model, B, T, 3, pool, params) {
    params.init(model, seed);
    std::mt19937 gen(static_cast<unsigned>(seed));
    std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(m.vocab_size - 1));
    int32_t* in = net.inputs().i32();
    int32_t* tg = net.targets().i32();
    for (int64_t i = 0; i < B * T; ++i) {
      in[i] = tok(gen);
      tg[i] = tok(gen);
    }
  }

  double loss() {
    const double lm = net.forward_backward(1.0f);
    return lm + net.last_aux_loss();
  }
};

// For each parameter tensor P: compare sum(grad_P * U) with the central
// difference of the loss along a random direction U. One number per tensor
// sums many contributions, which keeps fp32 noise small; the step is small
// enough that no routing choice flips (checked: two step sizes must agree).
void check_model_gradient(const moe::ModelConfig& m) {
  TinyRun run(m, 2, 5, 7);
  for (auto* layer : run.net.moe_layers()) {
    // A non-zero balance bias must change choices but never the gradient.
    const moe::Tensor& b = layer->router().bias();
    for (int64_t e = 0; e < b.numel(); ++e) b.f32()[e] = 0.05f * static_cast<float>(e % 3) - 0.05f;
  }
  run.params.zero_grads();
  run.loss();
  std::vector<std::vector<float>> grads;
  for (auto& p : run.params.all()) grads.emplace_back(p.grad.f32(), p.grad.f32() + p.grad.numel());

  const double h = 1e-3;
  uint64_t key = 99;
  for (size_t i = 0; i < run.params.all().size(); ++i) {
    moe::Param& p = run.params.all()[i];
    const int64_t n = p.value.numel();
    std::vector<float> u(static_cast<size_t>(n)), saved(p.value.f32(), p.value.f32() + n);
    double analytic = 0;
    for (int64_t j = 0; j < n; ++j) {
      u[j] = static_cast<float>(moe::normal_at(key + i, static_cast<uint64_t>(j)));
      analytic += static_cast<double>(grads[i][j]) * u[j];
    }
    auto at = [&](double s) {
      for (int64_t j = 0; j < n; ++j) p.value.f32()[j] = static_cast<float>(saved[j] + s * u[j]);
      return run.loss();
    };
    // A routing choice near a tie can flip inside the step, making the loss
    // jump: then h and 2h disagree, and a smaller step is tried.
    double numeric = 0;
    bool smooth = false;
    for (double step : {h, h / 4, h / 16}) {
      numeric = (at(step) - at(-step)) / (2 * step);
      const double wide = (at(2 * step) - at(-2 * step)) / (4 * step);
      if (std::abs(numeric - wide) <= 2e-3 + 2e-2 * std::abs(numeric)) {
        smooth = true;
        break;
      }
    }
    std::copy(saved.begin(), saved.end(), p.value.f32());
    INFO(p.spec.name << ": analytic " << analytic << ", finite difference " << numeric);
    REQUIRE(smooth);
    CHECK(std::abs(analytic - numeric) <= 1e-3 + 2e-2 * std::abs(numeric));
  }
}

}  // namespace

TEST_CASE("dense model gradient matches finite differences") { check_model_gradient(tiny_model({})); }

TEST_CASE("dense model with tied embeddings: gradient matches finite differences") {
  check_model_gradient(tiny_model({"model.tie_embeddings=true"}));
}

TEST_CASE("softmax_topk MoE with capacity, shared expert, z and sequence losses: gradient matches") {
  check_model_gradient(
      tiny_model({"model.num_experts=4", "model.moe_top_k=2", "model.moe_frequency=1", "model.moe_router=softmax_topk",
                  "model.moe_capacity_factor=1.0", "model.moe_shared_experts=1", "model.moe_aux_loss_weight=0.1",
                  "model.moe_router_z_loss_weight=0.05", "model.moe_sequence_aux_loss_weight=0.1"}));
}

TEST_CASE("sigmoid_topk MoE with bias, capacity, shared experts and all aux losses: gradient matches") {
  check_model_gradient(
      tiny_model({"model.num_experts=4", "model.moe_top_k=2", "model.moe_frequency=2", "model.moe_router=sigmoid_topk",
                  "model.moe_capacity_factor=1.25", "model.moe_shared_experts=2", "model.moe_aux_loss_weight=0.1",
                  "model.moe_router_z_loss_weight=0.05", "model.moe_sequence_aux_loss_weight=0.1",
                  "model.moe_expert_ffn_multiplier=0.5"}));
}

TEST_CASE("router jitter: gradient matches finite differences through the jittered router input") {
  check_model_gradient(
      tiny_model({"model.num_experts=4", "model.moe_top_k=2", "model.moe_frequency=1", "model.moe_router_jitter=0.3",
                  "model.moe_aux_loss_weight=0.1", "model.moe_router_z_loss_weight=0.05"}));
}

TEST_CASE("noisy_topk with jitter: gradient matches through the noise gate's softplus and both GEMMs") {
  check_model_gradient(
      tiny_model({"model.num_experts=4", "model.moe_top_k=2", "model.moe_frequency=1", "model.moe_router=noisy_topk",
                  "model.moe_router_jitter=0.2", "model.moe_capacity_factor=1.0", "model.moe_aux_loss_weight=0.1",
                  "model.moe_router_z_loss_weight=0.05", "model.moe_sequence_aux_loss_weight=0.1"}));
}

TEST_CASE("expert_choice with a shared expert and the z-loss: gradient matches through the experts' choice") {
  check_model_gradient(
      tiny_model({"model.num_experts=4", "model.moe_top_k=2", "model.moe_frequency=1", "model.moe_router=expert_choice",
                  "model.moe_capacity_factor=1.0", "model.moe_shared_experts=1", "model.moe_aux_loss_weight=0.1",
                  "model.moe_router_z_loss_weight=0.05", "model.moe_sequence_aux_loss_weight=0.1"}));
}

TEST_CASE("expert dropout: gradient matches through the masked hidden activations, with capacity") {
  check_model_gradient(
      tiny_model({"model.num_experts=4", "model.moe_top_k=2", "model.moe_frequency=1", "model.moe_expert_dropout=0.3",
                  "model.moe_capacity_factor=1.0", "model.moe_shared_experts=1", "model.moe_aux_loss_weight=0.1"}));
}

TEST_CASE("a tiny MoE overfits one repeated batch with every router, and with router jitter") {
  std::vector<std::vector<std::string>> routings;
  for (const std::string& router : moe::router_names()) {
    routings.push_back({"model.moe_router=" + router});
    // Experts that choose need a capacity: on average top_k experts per token.
    if (moe::router_experts_choose(router))
      routings.back().insert(routings.back().begin(), "model.moe_capacity_factor=1.0");
  }
  routings.push_back({"model.moe_router=softmax_topk", "model.moe_router_jitter=0.1"});
  for (const std::vector<std::string>& routing : routings) {
    DYNAMIC_SECTION(routing.back()) {
      std::vector<std::string> o = {"model.num_experts=4", "model.moe_top_k=2", "model.moe_frequency=1",
                                    "model.init_std=0.02", "model.dim=32",      "model.ffn_hidden_dim=64"};
      o.insert(o.end(), routing.begin(), routing.end());
      TinyRun run(tiny_model(o), 2, 5, 3);
      moe::OptimizerConfig oc;
      oc.lr = 1e-2;
      oc.weight_decay = 0.0;
      moe::Optimizer opt(oc, run.params, run.pool);
      double loss = 0;
      for (int64_t step = 1; step <= 300; ++step) {
        run.params.zero_grads();
        run.net.set_noise_key(7, step, 0);  // new noise every step, as training draws it
        loss = run.net.forward_backward(1.0f);
        opt.step(oc.lr, moe::clip_scale(opt.grad_norm(*world), 1.0), step);
      }
      INFO("final loss " << loss);
      CHECK(loss < 0.05);
    }
  }
}

TEST_CASE("same seed, same losses: bit-identical on CPU") {
  moe::ModelConfig m = tiny_model({"model.num_experts=4", "model.moe_top_k=2", "model.moe_router=sigmoid_topk"});
  auto losses = [&m] {
    TinyRun run(m, 2, 5, 11);
    moe::OptimizerConfig oc;
    moe::Optimizer opt(oc, run.params, run.pool);
    std::vector<double> out;
    for (int64_t step = 1; step <= 5; ++step) {
      run.params.zero_grads();
      run.net.reset_moe_step_stats();
      out.push_back(run.net.forward_backward(1.0f));
      opt.step(1e-2, 1.0, step);
      const auto stats = run.net.read_moe_step_stats();
      for (size_t i = 0; i < stats.size(); ++i) run.net.moe_layers()[i]->router().end_step(stats[i], 1e-3);
    }
    return out;
  };
  const auto a = losses(), b = losses();
  CHECK(a == b);
  CHECK(a.front() != a.back());  // it did train
}

TEST_CASE("initial weights depend on the seed and the name only") {
  moe::ModelConfig m = tiny_model({"model.num_experts=4"});
  moe::TensorPool pool_a, pool_b;
  moe::ParamStore a(m, pool_a), b(m, pool_b);
  a.init(m, 5);
  b.init(m, 5);
  const moe::Param& wq = a["model.layers.1.self_attn.q_proj.weight"];
  CHECK(std::equal(wq.value.f32(), wq.value.f32() + wq.value.numel(),
                   b["model.layers.1.self_attn.q_proj.weight"].value.f32()));
  // Value j of a tensor is the j-th number of the stream keyed by its name.
  CHECK(wq.value.f32()[17] == static_cast<float>(0.2 * moe::normal_at(moe::stream_key(5, wq.spec.name), 17)));
  // Output projections are scaled by 1/sqrt(2 n_layers); norms start at 1.
  const moe::Param& wo = a["model.layers.0.self_attn.o_proj.weight"];
  CHECK(wo.value.f32()[3] ==
        static_cast<float>(0.2 / std::sqrt(4.0) * moe::normal_at(moe::stream_key(5, wo.spec.name), 3)));
  CHECK(a["model.norm.weight"].value.f32()[0] == 1.0f);
  CHECK_FALSE(a["model.norm.weight"].weight_decay);
  CHECK(a["model.layers.0.block_sparse_moe.experts.w1"].weight_decay);
}

TEST_CASE("the sigmoid router's bias moves against each expert's load, once per step") {
  moe::ModelConfig m = tiny_model(
      {"model.num_experts=4", "model.moe_top_k=1", "model.moe_frequency=1", "model.moe_router=sigmoid_topk"});
  TinyRun run(m, 2, 5, 21);
  run.net.forward_backward(1.0f);
  run.net.forward_backward(1.0f);  // two micro-batches: loads are counted over both
  const auto stats = run.net.read_moe_step_stats();
  for (size_t i = 0; i < stats.size(); ++i) {
    moe::MoELayer* layer = run.net.moe_layers()[i];
    const auto& counts = stats[i].routed_per_expert;
    int64_t total = 0;
    for (int64_t c : counts) total += c;
    REQUIRE(total == 2 * 10 * 1);  // 2 micro-batches x 10 tokens x top-1
    layer->router().end_step(stats[i], 0.25);
    const double mean = total / 4.0;
    for (size_t e = 0; e < 4; ++e) {
      const double expected = counts[e] < mean ? 0.25 : (counts[e] > mean ? -0.25 : 0.0);
      CHECK(layer->router().bias().f32()[e] == static_cast<float>(expected));
    }
  }
}

TEST_CASE("softmax_topk never moves a bias") {
  moe::ModelConfig m = tiny_model({"model.num_experts=4", "model.moe_frequency=1"});
  TinyRun run(m, 2, 5, 21);
  run.net.forward_backward(1.0f);
  const auto stats = run.net.read_moe_step_stats();
  for (size_t i = 0; i < stats.size(); ++i) {
    moe::MoELayer* layer = run.net.moe_layers()[i];
    layer->router().end_step(stats[i], 0.25);
    for (int64_t e = 0; e < 4; ++e) CHECK(layer->router().bias().f32()[e] == 0.0f);
  }
}

TEST_CASE("moe_gradient_scale multiplies each expert's gradient by clamp(mean load / load, 0.1, 10)") {
  moe::ModelConfig m = tiny_model({"model.num_experts=4", "model.moe_top_k=2", "model.moe_frequency=1"});
  TinyRun run(m, 2, 5, 5);
  run.params.zero_grads();
  run.net.forward_backward(1.0f);
  const auto stats = run.net.read_moe_step_stats();
  for (size_t i = 0; i < stats.size(); ++i) {
    moe::MoELayer* layer = run.net.moe_layers()[i];
    const auto& kept = stats[i].kept_per_expert;
    const std::string prefix = "model.layers.0.block_sparse_moe.experts.";
    if (layer != run.net.moe_layers().front()) continue;
    const moe::Param& w1 = run.params[prefix + "w1"];
    const int64_t per_expert = w1.grad.numel() / 4;
    std::vector<float> before(w1.grad.f32(), w1.grad.f32() + w1.grad.numel());
    moe::scale_expert_gradients(run.params, layer->layer(), stats[i]);
    double mean = 0;
    for (int64_t c : kept) mean += c / 4.0;
    for (int64_t e = 0; e < 4; ++e) {
      const double factor = kept[e] > 0 ? std::clamp(mean / kept[e], 0.1, 10.0) : 10.0;
      for (int64_t i = 0; i < per_expert; i += 7) {
        const int64_t j = e * per_expert + i;
        CHECK(w1.grad.f32()[j] == Approx(before[j] * factor));
      }
    }
  }
}

TEST_CASE("every MoE layer's step counters share one buffer: one zero, one download") {
  moe::TensorPool pool;
  const int64_t E = 3;
  moe::MoEStepCounters counters(pool, 2, E);
  const auto first = counters.claim(), second = counters.claim();
  CHECK_THROWS_WITH(counters.claim(), Catch::Contains("room for 2 MoE layers"));
  // Each layer writes its own cells (the kernels do this on a GPU).
  for (int64_t e = 0; e < E; ++e) {
    first.routed_E.i32()[e] = static_cast<int32_t>(10 + e);
    first.kept_E.i32()[e] = static_cast<int32_t>(20 + e);
    second.routed_E.i32()[e] = static_cast<int32_t>(30 + e);
    second.kept_E.i32()[e] = static_cast<int32_t>(40 + e);
  }
  CHECK(first.aux_3.dtype == moe::DType::kF32);
  first.aux_3.f32()[2] = 0.5f;
  second.aux_3.f32()[0] = -1.25f;
  counters.download();
  CHECK(counters.routed(0) == std::vector<int64_t>{10, 11, 12});
  CHECK(counters.kept(0) == std::vector<int64_t>{20, 21, 22});
  CHECK(counters.routed(1) == std::vector<int64_t>{30, 31, 32});
  CHECK(counters.kept(1) == std::vector<int64_t>{40, 41, 42});
  CHECK(counters.aux(0, 2) == 0.5f);
  CHECK(counters.aux(1, 0) == -1.25f);
  CHECK(counters.aux(1, 1) == 0.0f);
  counters.zero();
  counters.download();
  CHECK(counters.routed(1) == std::vector<int64_t>{0, 0, 0});
  CHECK(counters.aux(0, 2) == 0.0f);
}
