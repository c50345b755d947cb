// The op table on the GPU (op_check::check_ops_every_dtype): every op of
// ops.h against the CPU reference on the same inputs, in every F32/BF16 mix
// of its tensors, the deterministic ones twice for the same bits, at shapes
// that reach each kernel's paths:
// - the check's own small shapes;
// - odd sizes (one value per lane access, no 16-byte packs; head dim 20 for
//   the zero-padded attention kernels, one KV group for three heads);
// - 16-byte packs, head dim 64 and 128 attention over 130 tokens;
// - single tokens (attention over one key);
// - many rows: the embedding's id scan in several passes, rmsnorm's dw in
//   its capped number of row chunks;
// - a 32001-word vocabulary for the loss, and long norm rows (4099).
// Tolerances are the table's (op_table.cc).
#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <vector>

#include "src/core/cuda_device.h"
#include "src/kernels/op_check.h"

namespace {

using moe::op_check::Result;
using moe::op_check::Shapes;

using moe::op_check::shapes_of;

void check_all(const Shapes& s, const std::set<std::string>& only = {}) {
  REQUIRE(moe::cuda_device_count() > 0);
  const std::vector<Result> results = moe::op_check::check_ops_every_dtype(s, only);
  REQUIRE(!results.empty());
  for (const Result& r : results) {
    INFO(s.text() << ": " << r.op << " " << r.shape << " " << r.dtype << ": " << r.detail << " (worst " << r.worst
                  << " of " << r.tolerance << ")");
    CHECK(r.passed);
  }
}

}  // namespace

TEST_CASE("every op on the GPU equals the CPU at the check's shapes, in every dtype mix") { check_all(Shapes{}); }

TEST_CASE("every op on the GPU equals the CPU at odd sizes") {
  check_all(shapes_of(1, 37, 100, 3, 1, 20, 150, 1000, 5, 2, 36));
}

TEST_CASE("every op on the GPU equals the CPU with 16-byte packs and head dims 64 and 128") {
  check_all(shapes_of(1, 130, 256, 4, 1, 128, 512, 64, 8, 2, 64));
  check_all(shapes_of(2, 37, 64, 4, 2, 64, 128, 96, 4, 1, 32));
}

TEST_CASE("attention on the GPU equals the CPU for head dims 40 to 128, 1 to 130 tokens, 1 to 4 KV groups") {
  const std::set<std::string> attention = {"attention_forward", "attention_backward", "attention_decode"};
  for (const int64_t Dh : {64, 128})
    for (const int64_t T : {1, 37, 130})
      for (const int64_t G : {4, 2, 1}) check_all(shapes_of(2, T, 64, 4, G, Dh, 64, 64, 4, 2, 16), attention);
  // Head dims the kernels zero-pad.
  for (const int64_t Dh : {40, 96})
    for (const int64_t T : {37, 130}) check_all(shapes_of(2, T, 64, 4, 2, Dh, 64, 64, 4, 2, 16), attention);
}

TEST_CASE("matmul on the GPU equals the CPU for tile-friendly, odd, tiny and empty shapes") {
  struct Gemm {
    int64_t N, I, O;
  };
  // Odd leading dimensions (I = 100 is no multiple of 8 bf16 values), I = 0
  // (out must be zeros), no rows (nothing to do).
  for (const Gemm g : {Gemm{64, 128, 256}, Gemm{37, 100, 48}, Gemm{130, 48, 100}, Gemm{1, 7, 5}, Gemm{33, 17, 3},
                       Gemm{4, 0, 6}, Gemm{0, 16, 8}})
    check_all(shapes_of(g.N, 1, g.I, 2, 1, 16, g.O, 50, 4, 2, 16), {"matmul_forward", "matmul_backward"});
}

TEST_CASE("the grouped GEMMs on the GPU equal the CPU over hand-made expert offsets") {
  struct Grouped {
    int64_t I, O, rows;
    std::vector<int32_t> offsets;
  };
  // 40 experts (the tile scan walks them 32 at a time), 0 to 11 rows each, several empty.
  std::vector<int32_t> forty{0};
  for (int e = 0; e < 40; ++e) forty.push_back(forty.back() + (e % 7 == 3 ? 0 : (e * 5 + 3) % 12));
  const std::vector<Grouped> cases = {
      {100, 48, 150, {0, 37, 37, 110, 140}},  // an expert without rows, 73 rows (two row tiles), 10 rows after
      {64, 128, 210, {5, 5, 70, 71, 200}},    // rows before the first expert, 1- and 129-row experts, aligned
      {17, 33, 129, {0, 1, 65, 129}},         // odd I and O, a full buffer, experts on tile boundaries
      {16, 24, 8, {0, 0, 0}},                 // no rows at all: nothing written
      {48, 100, forty.back() + 3, forty},
  };
  for (const Grouped& g : cases) {
    Shapes s = shapes_of(g.rows, 1, g.I, 2, 1, 16, 24, 50, static_cast<int64_t>(g.offsets.size()) - 1, 1, g.O);
    s.expert_offsets = g.offsets;
    check_all(s, {"grouped_matmul_forward", "grouped_matmul_backward"});
  }
}

TEST_CASE("the router and the dispatch on the GPU equal the CPU from 8 to 2048 experts, top-2 to top-32") {
  const std::set<std::string> router = {"router_forward", "router_backward", "router_aux_losses"};
  struct Routing {
    int64_t B, T, E, K;
  };
  for (const Routing r : {Routing{1, 37, 8, 2}, Routing{2, 37, 64, 4}, Routing{1, 9, 256, 8}, Routing{1, 6, 2048, 32},
                          Routing{4, 300, 64, 4}, Routing{1, 4096, 8, 2}, Routing{3, 16, 2048, 32}})
    check_all(shapes_of(r.B, r.T, 16, 2, 1, 16, 24, 50, r.E, r.K, 16), router);
  // Dropless (capacity factor 0), and one that drops; rows of 64 values
  // (16-byte copies), 30 (4-byte words in bf16) and 31 (2-byte words).
  const std::set<std::string> dispatch = {
      "moe_plan",      "moe_count_experts",      "moe_permute", "moe_permute_backward",
      "moe_unpermute", "moe_unpermute_backward", "gather_rows"};
  for (const double capacity_factor : {0.0, 0.5})
    for (const int64_t D : {30, 31, 64}) {
      Shapes s = shapes_of(1, 37, D, 2, 1, 16, 24, 50, 8, 2, 16);
      s.capacity_factor = capacity_factor;
      check_all(s, dispatch);
    }
}

TEST_CASE("the dispatch plan on the GPU equals the CPU under skewed routing, at every capacity, over many chunks") {
  struct Plan {
    int64_t N, E, K;
    double skew;
    std::vector<double> capacity_factors;  // 0: dropless; a tiny one: capacity 1
  };
  // Fewer pairs than experts; expert 0 in about 90% of the tokens; N x K over
  // 1024 pairs splits them over 10 to 22 chunks (cross-chunk bases, and the
  // scratch in row_pair). Each also plans by priority (op table rows).
  const std::vector<Plan> plans = {{1, 8, 2, 0.0, {0, 1e-9}},
                                   {37, 8, 2, 0.0, {0, 0.55, 1.0, 8.0}},
                                   {37, 8, 2, 0.9, {0, 0.33, 2.2}},
                                   {5000, 8, 2, 0.0, {0, 0.88, 1.0}},
                                   {3000, 64, 4, 0.5, {0, 1.0, 1e-9}},
                                   {700, 2048, 32, 0.0, {0, 0.9}},
                                   // expert choice's shape: every token offers itself to every expert
                                   {500, 16, 16, 0.0, {0.5, 1.0}},
                                   {2000, 32, 32, 0.3, {0.25, 1.0}},
                                   {0, 8, 2, 0.0, {0}}};
  for (const Plan& p : plans)
    for (const double capacity_factor : p.capacity_factors) {
      Shapes s = shapes_of(p.N, 1, 16, 2, 1, 16, 24, 50, p.E, p.K, 16);
      s.capacity_factor = capacity_factor;
      s.routing_skew = p.skew;
      check_all(s, {"moe_plan", "moe_count_experts"});
    }
}

TEST_CASE("RoPE over 1000 positions and odd head dims, and sums of squares up to 5 million values") {
  // Dh = 100: pairs not a multiple of a warp; 1000 positions: angles up to ~1000 rad; Dh = 2: one pair.
  const std::set<std::string> rope = {"rope_forward", "rope_backward"};
  check_all(shapes_of(2, 19, 16, 3, 1, 100, 24, 50, 4, 2, 16), rope);
  check_all(shapes_of(1, 1000, 16, 2, 1, 64, 24, 50, 4, 2, 16), rope);
  check_all(shapes_of(3, 7, 16, 1, 1, 2, 24, 50, 4, 2, 16), rope);
  // One value; 49 partial blocks; the cap of 1024 blocks, grid-stride.
  for (const int64_t n : {1, 100003, 5000011})
    check_all(shapes_of(n, 1, 1, 2, 1, 16, 24, 50, 4, 2, 16), {"sum_squares"});
}

TEST_CASE("every op on the GPU equals the CPU for single tokens") {
  check_all(shapes_of(9, 1, 40, 2, 1, 16, 24, 50, 4, 2, 16));
}

TEST_CASE("the row-parallel ops on the GPU equal the CPU over many rows") {
  // 3001 tokens: the embedding's id scan in several passes; 20000 rows:
  // rmsnorm's dw in its capped number of row chunks.
  check_all(shapes_of(3001, 1, 72, 2, 1, 16, 24, 50, 4, 2, 16), {"embedding_forward", "embedding_backward"});
  check_all(shapes_of(20000, 1, 40, 2, 1, 16, 24, 50, 4, 2, 16), {"rmsnorm_forward", "rmsnorm_backward"});
}

TEST_CASE("every op on the GPU equals the CPU with a 32001-word vocabulary, and with rows of 4099") {
  check_all(shapes_of(1, 5, 24, 2, 2, 16, 64, 32001, 4, 2, 16));
  check_all(shapes_of(1, 5, 4099, 2, 2, 16, 64, 50, 4, 2, 16));
}
