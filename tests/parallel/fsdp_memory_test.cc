// What each rank keeps, from the registry and the placements: with
// dp_shard = 4 a rank holds a quarter of every parameter (flat shards, at most
// one padding element per parameter), its gradient and its AdamW moments; the
// four shards tile each parameter exactly; experts are cut by ep first.
#include <catch2/catch.hpp>

#include <vector>

#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/model/params.h"
#include "src/train/optimizer.h"
#include "tests/parallel/layouts.h"

namespace {

moe::JobConfig config() {
  moe::JobConfig cfg =
      moe::load_config_text(
          "", "tiny",
          {"model.dim=64", "model.n_layers=3", "model.n_heads=4", "model.vocab_size=1001", "model.num_experts=4",
           "model.moe_top_k=2", "model.moe_frequency=1", "model.moe_shared_experts=1", "model.tie_embeddings=false"})
          .cfg;
  moe::validate_config(cfg);
  moe::fill_derived_defaults(cfg);
  return cfg;
}

}  // namespace

TEST_CASE("dp_shard = 4: each rank holds a quarter of parameters, gradients and AdamW states") {
  const moe::JobConfig cfg = config();
  moe::TensorPool whole_pool;
  const moe::ParamStore whole(cfg.model, whole_pool);
  const int64_t total = whole.numel(), n_params = static_cast<int64_t>(whole.all().size());

  const moe::Layout l = moe::test::layout_of(1, 4, 1, 1);
  std::vector<int64_t> covered(whole.all().size(), 0);
  for (int64_t r = 0; r < 4; ++r) {
    moe::MeshCoord c;
    c.dp_shard = r;
    moe::TensorPool pool;
    moe::ParamStore mine(cfg.model, pool, l, c);
    const int64_t param_bytes = pool.bytes_allocated();
    int64_t shard_elems = 0;
    for (size_t i = 0; i < mine.all().size(); ++i) {
      const moe::Param& p = mine.all()[i];
      CHECK(p.value.data == nullptr);  // full tensors exist only while FSDP has them gathered
      shard_elems += p.shard.numel();
      covered[i] += p.place.shard_valid;
      CHECK(p.place.shard_begin == r * p.place.shard_numel);
    }
    // Shard values and gradients, each allocation rounded up to 64 bytes.
    const int64_t alignment_slack = 2 * 64 * n_params;
    CHECK(param_bytes >= 2 * 4 * shard_elems);
    CHECK(param_bytes <= 2 * 4 * shard_elems + alignment_slack);
    CHECK(shard_elems * 4 >= total);
    CHECK(shard_elems * 4 <= total + 4 * n_params);  // padding: under one element per parameter and shard

    moe::Optimizer opt(cfg.optimizer, mine, pool);
    const int64_t adamw_bytes = pool.bytes_allocated() - param_bytes;  // m and v
    CHECK(adamw_bytes >= 2 * 4 * shard_elems);
    CHECK(adamw_bytes <= 2 * 4 * shard_elems + alignment_slack);
  }
  for (size_t i = 0; i < covered.size(); ++i) CHECK(covered[i] == whole.all()[i].spec.numel());
}

TEST_CASE("ep = 2 x dp_shard = 2: experts are cut by ep, then every parameter by dp_shard") {
  const moe::JobConfig cfg = config();
  moe::TensorPool pool_a;
  const moe::ParamStore whole(cfg.model, pool_a);
  int64_t experts = 0, others = 0;
  for (const moe::Param& p : whole.all()) (p.spec.expert_parallel ? experts : others) += p.spec.numel();

  moe::MeshCoord c;
  c.ep = 1;
  c.dp_shard = 1;
  moe::TensorPool pool;
  const moe::ParamStore mine(cfg.model, pool, moe::test::layout_of(1, 2, 2, 1), c);
  int64_t held = 0;
  for (const moe::Param& p : mine.all()) {
    held += p.place.shard_valid;
    if (p.spec.expert_parallel)
      CHECK(p.place.local_offset[0] == p.spec.shape[0] / 2);  // the second half of the experts
  }
  CHECK(held == experts / 4 + others / 2);
}
