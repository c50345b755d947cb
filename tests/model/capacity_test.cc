// The capacity keys, held to their definitions: moe_drop_tokens = false is
// the dropless model whatever moe_capacity_factor says, and
// moe_eval_capacity_factor is the capacity of evaluation only (training keeps
// moe_capacity_factor's): each pass equals the same pass of a model whose one
// capacity factor is the one that pass should use.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "src/config/derived.h"
#include "src/core/user_error.h"
#include "src/model/transformer.h"
#include "tests/model/tiny_run.h"

namespace {

moe::ModelConfig tiny_moe(const std::vector<std::string>& capacity) {
  std::vector<std::string> o = {"model.dim=16",        "model.n_layers=2",      "model.n_heads=2",
                                "model.n_kv_heads=1",  "model.vocab_size=29",   "model.ffn_hidden_dim=24",
                                "model.max_seq_len=8", "model.init_std=0.5",    "model.num_experts=4",
                                "model.moe_top_k=2",   "model.moe_frequency=1", "train.seq_len=8"};
  o.insert(o.end(), capacity.begin(), capacity.end());
  return moe::test::model_of(o);
}

struct Run : moe::test::TinyRun {
  explicit Run(const std::vector<std::string>& capacity) : TinyRun(tiny_moe(capacity), 2, 8, 3, 9) {}
  int64_t dropped() { return net.read_moe_step_stats().front().dropped; }
};

}  // namespace

TEST_CASE("moe_capacity follows moe_drop_tokens and moe_eval_capacity_factor") {
  const moe::ModelConfig m = tiny_moe({"model.moe_capacity_factor=0.5", "model.moe_eval_capacity_factor=2.0"});
  CHECK(moe::moe_capacity(m, 16, true) == 4);  // ceil(0.5 * 16 * 2 / 4)
  CHECK(moe::moe_capacity(m, 16, false) == 16);
  CHECK(moe::moe_capacity(tiny_moe({"model.moe_capacity_factor=0.5"}), 16, false) == 4);  // -1: the training one
  const moe::ModelConfig keep_all =
      tiny_moe({"model.moe_capacity_factor=0.5", "model.moe_eval_capacity_factor=2.0", "model.moe_drop_tokens=false"});
  CHECK(moe::moe_capacity(keep_all, 16, true) == 0);
  CHECK(moe::moe_capacity(keep_all, 16, false) == 0);
  // Expert parallelism sizes its buffers for the larger of the two.
  CHECK(moe::moe_max_local_rows(m, 16, 2) == std::min<int64_t>(2 * 32, 2 * 2 * 16));
}

TEST_CASE("a negative evaluation capacity factor other than -1 is refused in one line") {
  CHECK_THROWS_WITH(tiny_moe({"model.moe_eval_capacity_factor=-0.5"}),
                    Catch::Contains("model.moe_eval_capacity_factor = -0.5") && Catch::Contains("set it to -1, 0"));
}

TEST_CASE("moe_drop_tokens = false trains the dropless model whatever the capacity factor") {
  Run capped({"model.moe_capacity_factor=0.5"});
  Run kept({"model.moe_capacity_factor=0.5", "model.moe_drop_tokens=false"});
  Run dropless({"model.moe_capacity_factor=0"});
  const double capped_loss = capped.train_loss();
  REQUIRE(capped.dropped() > 0);  // the capacity really drops pairs here
  CHECK(kept.train_loss() == dropless.train_loss());
  CHECK(kept.dropped() == 0);
  CHECK(capped_loss != dropless.train_loss());
}

TEST_CASE("moe_eval_capacity_factor sets evaluation's capacity and leaves training's") {
  Run both({"model.moe_capacity_factor=0.5", "model.moe_eval_capacity_factor=0"});
  Run capped({"model.moe_capacity_factor=0.5"});
  Run dropless({"model.moe_capacity_factor=0"});
  CHECK(both.net.evaluate() == dropless.net.evaluate());
  CHECK(both.net.evaluate() != capped.net.evaluate());
  CHECK(both.train_loss() == capped.train_loss());
  CHECK(both.dropped() == capped.dropped());

  // And the other way round: dropless training, capped evaluation.
  Run eval_capped({"model.moe_capacity_factor=0", "model.moe_eval_capacity_factor=0.5"});
  CHECK(eval_capped.net.evaluate() == capped.net.evaluate());
  CHECK(eval_capped.train_loss() == dropless.train_loss());
}
