// Activation checkpointing (train.activation_checkpointing) changes memory,
// never numbers: with "full" and "selective" a tiny model's loss, every
// parameter gradient, the aux losses and the MoE step statistics (counted once,
// not again by the recompute) are bit for bit those without, over two
// accumulated micro-batches, in fp32 and in bf16, for dense and MoE blocks
// with capacity, a shared expert and each router; and the model holds less.
// The layouts of several ranks are checked in tests/parallel.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

#include "src/model/saved_activations.h"
#include "tests/model/tiny_run.h"

namespace {

using moe::ActivationCheckpointing;

moe::ModelConfig tiny_moe(const std::string& router, const std::string& capacity) {
  return moe::test::model_of(
      {"model.dim=16", "model.n_layers=3", "model.n_heads=4", "model.n_kv_heads=2", "model.vocab_size=37",
       "model.ffn_hidden_dim=32", "model.max_seq_len=8", "model.init_std=0.3", "model.num_experts=4",
       "model.moe_top_k=2", "model.moe_frequency=2", "model.moe_shared_experts=1", "model.moe_aux_loss_weight=0.05",
       "model.moe_router_z_loss_weight=0.01", "model.moe_sequence_aux_loss_weight=0.01", "model.moe_router=" + router,
       "model.moe_capacity_factor=" + capacity, "train.seq_len=6"});
}

moe::ModelConfig tiny_dense() {
  return moe::test::model_of({"model.dim=16", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2",
                              "model.vocab_size=37", "model.ffn_hidden_dim=32", "model.max_seq_len=8",
                              "model.init_std=0.3", "train.seq_len=6"});
}

// What a step leaves behind: losses, the gradients' bits, the step's MoE statistics.
struct StepResult {
  std::vector<double> losses;
  std::vector<std::vector<float>> grads;
  std::vector<moe::MoEStepStats> moe_stats;
  double aux = 0, eval_loss = 0;
  int64_t pool_bytes = 0;
};

StepResult run(const moe::ModelConfig& m, ActivationCheckpointing checkpointing, moe::DType compute) {
  moe::test::TinyRun r(m, 2, 6, 11, 5, checkpointing, compute);
  StepResult out;
  out.pool_bytes = r.pool.bytes_requested();
  r.params.zero_grads();
  r.net.reset_moe_step_stats();
  for (int micro = 0; micro < 2; ++micro) {
    out.losses.push_back(r.net.forward_backward(0.5f));
    std::swap(r.net.inputs().i32()[0], r.net.inputs().i32()[7]);  // another micro-batch
  }
  out.aux = r.net.last_aux_loss();
  for (const moe::Param& p : r.params.all()) {
    out.grads.emplace_back(p.shard_grad.f32(), p.shard_grad.f32() + p.shard_grad.numel());
  }
  out.moe_stats = r.net.read_moe_step_stats();
  out.eval_loss = r.net.evaluate();
  return out;
}

void check_same_bits(const StepResult& got, const StepResult& want) {
  REQUIRE(got.losses.size() == want.losses.size());
  for (size_t i = 0; i < got.losses.size(); ++i) CHECK(std::memcmp(&got.losses[i], &want.losses[i], 8) == 0);
  CHECK(got.aux == want.aux);
  CHECK(got.eval_loss == want.eval_loss);
  REQUIRE(got.grads.size() == want.grads.size());
  for (size_t p = 0; p < got.grads.size(); ++p) {
    INFO("parameter " << p);
    REQUIRE(got.grads[p].size() == want.grads[p].size());
    CHECK(std::memcmp(got.grads[p].data(), want.grads[p].data(), got.grads[p].size() * sizeof(float)) == 0);
  }
  REQUIRE(got.moe_stats.size() == want.moe_stats.size());
  for (size_t l = 0; l < got.moe_stats.size(); ++l) {
    CHECK(got.moe_stats[l].routed_per_expert == want.moe_stats[l].routed_per_expert);
    CHECK(got.moe_stats[l].kept_per_expert == want.moe_stats[l].kept_per_expert);
    CHECK(got.moe_stats[l].load_balance == want.moe_stats[l].load_balance);
    CHECK(got.moe_stats[l].z_loss == want.moe_stats[l].z_loss);
    CHECK(got.moe_stats[l].sequence_balance == want.moe_stats[l].sequence_balance);
  }
}

}  // namespace

TEST_CASE("full and selective checkpointing give the numbers of none, bit for bit, and hold less") {
  struct Model {
    std::string name;
    moe::ModelConfig config;
  };
  moe::ModelConfig jittered = tiny_moe("softmax_topk", "1.0");
  jittered.moe_router_jitter = 0.2;  // a recompute draws the forward's noise again
  moe::ModelConfig dropped = tiny_moe("softmax_topk", "1.0");
  dropped.moe_expert_dropout = 0.25;  // a recompute masks with the forward's mask
  const std::vector<Model> models = {{"dense", tiny_dense()},
                                     {"softmax_topk dropless", tiny_moe("softmax_topk", "0")},
                                     {"softmax_topk capacity 1", tiny_moe("softmax_topk", "1.0")},
                                     {"sigmoid_topk capacity 1", tiny_moe("sigmoid_topk", "1.0")},
                                     {"softmax_topk with router jitter", jittered},
                                     {"noisy_topk", tiny_moe("noisy_topk", "1.0")},
                                     {"softmax_topk with expert dropout", dropped}};
  for (const Model& m : models) {
    for (const moe::DType compute : {moe::DType::kF32, moe::DType::kBF16}) {
      DYNAMIC_SECTION(m.name << " in " << moe::dtype_name(compute)) {
        const StepResult none = run(m.config, ActivationCheckpointing::kNone, compute);
        const StepResult selective = run(m.config, ActivationCheckpointing::kSelective, compute);
        const StepResult full = run(m.config, ActivationCheckpointing::kFull, compute);
        if (m.config.num_experts > 0) {
          CHECK(none.moe_stats.at(0).micro_batches == 2);
          CHECK(none.aux > 0);
        }
        {
          INFO("selective");
          check_same_bits(selective, none);
        }
        {
          INFO("full");
          check_same_bits(full, none);
        }
        CHECK(full.pool_bytes < selective.pool_bytes);
        CHECK(selective.pool_bytes < none.pool_bytes);
      }
    }
  }
}

TEST_CASE("shared saved buffers go by shape and dtype, never twice to one block") {
  moe::TensorPool pool;
  moe::SavedActivations saved(pool, ActivationCheckpointing::kSelective);
  using moe::SavedKind;
  saved.begin_block();
  const moe::Tensor a = saved.get(SavedKind::kElementwise, {4, 8}, moe::DType::kF32);
  const moe::Tensor b = saved.get(SavedKind::kElementwise, {4, 8}, moe::DType::kF32);
  const moe::Tensor kept = saved.get(SavedKind::kProduct, {4, 8}, moe::DType::kF32);
  CHECK(a.data != b.data);
  saved.begin_block();
  const moe::Tensor a2 = saved.get(SavedKind::kElementwise, {4, 8}, moe::DType::kF32);
  const moe::Tensor b2 = saved.get(SavedKind::kElementwise, {4, 8}, moe::DType::kF32);
  const moe::Tensor c2 = saved.get(SavedKind::kElementwise, {4, 8}, moe::DType::kF32);  // a third: new
  const moe::Tensor bf = saved.get(SavedKind::kElementwise, {4, 8}, moe::DType::kBF16);
  const moe::Tensor kept2 = saved.get(SavedKind::kProduct, {4, 8}, moe::DType::kF32);
  CHECK(a2.data == a.data);
  CHECK(b2.data == b.data);
  CHECK(c2.data != a.data);
  CHECK(c2.data != b.data);
  CHECK(bf.data != a.data);
  CHECK(kept2.data != kept.data);  // products are each block's own under "selective"
  CHECK(saved.recomputes(SavedKind::kElementwise));
  CHECK(!saved.recomputes(SavedKind::kProduct));
}
