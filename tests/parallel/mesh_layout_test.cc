// Mesh coordinates: tp innermost, then ep, dp_shard, dp_replicate, pp.
#include <catch2/catch.hpp>

#include "src/parallel/mesh.h"

TEST_CASE("rank <-> coordinates, tp innermost") {
  moe::Layout l;
  l.dp_replicate = 2;
  l.dp_shard = 3;
  l.ep = 2;
  l.tp = 4;
  CHECK(l.world() == 48);
  for (int64_t r = 0; r < l.world(); ++r) CHECK(moe::mesh_rank(l, moe::mesh_coord(l, r)) == r);
  const auto c1 = moe::mesh_coord(l, 1);
  CHECK((c1.tp == 1 && c1.ep == 0 && c1.dp_shard == 0 && c1.dp_replicate == 0));
  const auto c4 = moe::mesh_coord(l, 4);
  CHECK((c4.tp == 0 && c4.ep == 1));
  const auto c8 = moe::mesh_coord(l, 8);
  CHECK((c8.ep == 0 && c8.dp_shard == 1));
  const auto c47 = moe::mesh_coord(l, 47);
  CHECK((c47.tp == 3 && c47.ep == 1 && c47.dp_shard == 2 && c47.dp_replicate == 1));
  // Ranks that differ only in ep read different data.
  CHECK(moe::data_parallel_index(l, moe::mesh_coord(l, 0)) == 0);
  CHECK(moe::data_parallel_index(l, moe::mesh_coord(l, 4)) == 1);
  CHECK(moe::data_parallel_index(l, moe::mesh_coord(l, 47)) == 11);
}

TEST_CASE("pipeline stages are outermost: a stage's ranks are consecutive") {
  moe::Layout l;
  l.pp = 3;
  l.dp_shard = 2;
  l.tp = 2;
  CHECK(l.world() == 12);
  for (int64_t r = 0; r < l.world(); ++r) {
    const moe::MeshCoord c = moe::mesh_coord(l, r);
    CHECK(moe::mesh_rank(l, c) == r);
    CHECK(c.pp == r / 4);
    // Every stage reads the same slice of the batch as its peers in other stages.
    CHECK(moe::data_parallel_index(l, c) == c.dp_shard);
  }
}

TEST_CASE("a planning mesh sends nothing: a collective on it names the group") {
  moe::Layout l;
  l.ep = 2;
  l.tp = 2;
  moe::Mesh plan = moe::Mesh::for_planning(l, 3);
  CHECK(plan.world().size() == 4);
  CHECK(plan.ep().rank() == 1);
  CHECK(plan.tp().rank() == 1);
  CHECK_THROWS_WITH(plan.ep().barrier(), Catch::Contains("barrier on the ep group of a planning mesh"));
  CHECK_THROWS_WITH(plan.world().split(0, 0), Catch::Contains("split on the world group"));
}
