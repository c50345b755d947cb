// The sampler: windows are exact token slices, batches are a pure function of
// (step, micro, rank), ranks never share a window, each epoch visits every
// window once, and the seed decides the order.
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>

#include "src/core/user_error.h"
#include "src/data/batch_sampler.h"
#include "src/data/window_permutation.h"
#include "tests/data/test_files.h"

using Catch::Matchers::Contains;
using moe::BatchSampler;
using moe::TokenDataset;
using namespace moe::test;

namespace {

// A dataset whose token at stream offset i has id i, split over three shards
// so that windows cross file boundaries.
TokenDataset counting_dataset(int64_t num_tokens) {
  const std::string dir = fresh_dir("counting");
  const int64_t cut1 = num_tokens / 3, cut2 = 2 * num_tokens / 3;
  const std::vector<int32_t> ids = iota_ids(num_tokens);
  const auto shard = [&](int64_t from, int64_t to) {
    const std::vector<int32_t> part(ids.begin() + from, ids.begin() + to);
    return npy_bytes(npy_dict("<i4", "(" + std::to_string(part.size()) + ",)"), le_array(part));
  };
  write_file(dir + "/a.npy", shard(0, cut1));
  write_file(dir + "/b.npy", shard(cut1, cut2));
  write_file(dir + "/c.npy", shard(cut2, num_tokens));
  return TokenDataset::open(dir, "*.npy", num_tokens);
}

struct Batch {
  std::vector<int32_t> inputs, targets;
  bool operator==(const Batch& o) const { return inputs == o.inputs && targets == o.targets; }
};

Batch fill(const BatchSampler& sampler, int64_t B, int64_t T, int64_t step, int64_t micro, int64_t accum, int64_t rank,
           int64_t dp) {
  Batch batch{std::vector<int32_t>(B * T), std::vector<int32_t>(B * T)};
  sampler.fill(step, micro, accum, rank, dp, batch.inputs.data(), batch.targets.data());
  return batch;
}

// The window index of each row, after checking that the row is exactly that
// window's slice of the counting stream.
std::vector<int64_t> windows_of(const Batch& batch, int64_t B, int64_t T, int64_t num_windows) {
  std::vector<int64_t> windows;
  for (int64_t b = 0; b < B; ++b) {
    const int32_t first = batch.inputs[b * T];
    REQUIRE(first % (T + 1) == 0);
    REQUIRE(first / (T + 1) < num_windows);
    for (int64_t t = 0; t < T; ++t) {
      REQUIRE(batch.inputs[b * T + t] == first + t);
      REQUIRE(batch.targets[b * T + t] == first + t + 1);
    }
    windows.push_back(first / (T + 1));
  }
  return windows;
}

}  // namespace

TEST_CASE("windows are non-overlapping seq_len + 1 slices; the tail is unused") {
  const TokenDataset dataset = counting_dataset(103);
  const BatchSampler sampler(dataset, 4, 3, 42);
  CHECK(sampler.num_windows() == 20);  // floor(103 / 5)
  const Batch batch = fill(sampler, 3, 4, 0, 0, 1, 0, 1);
  const std::vector<int64_t> windows = windows_of(batch, 3, 4, 20);
  for (int64_t b = 0; b < 3; ++b) CHECK(windows[b] == sampler.window_of_sample(b));
}

TEST_CASE("the global sample index orders step, micro-batch, rank and row") {
  const TokenDataset dataset = counting_dataset(1000);
  const int64_t T = 4, B = 2, accum = 3, dp = 2;
  const BatchSampler sampler(dataset, T, B, 7);
  const int64_t step = 1, micro = 2, rank = 1;
  const int64_t g = ((step * accum + micro) * dp + rank) * B;
  const Batch batch = fill(sampler, B, T, step, micro, accum, rank, dp);
  CHECK(windows_of(batch, B, T, sampler.num_windows()) ==
        std::vector<int64_t>{sampler.window_of_sample(g), sampler.window_of_sample(g + 1)});
}

TEST_CASE("a batch depends only on its arguments, so runs resume at any step") {
  const TokenDataset dataset = counting_dataset(500);
  const BatchSampler resumed(dataset, 8, 2, 3);
  const Batch at_step_9 = fill(resumed, 2, 8, 9, 1, 2, 1, 2);  // first call: fresh cache
  const BatchSampler from_start(dataset, 8, 2, 3);
  for (int64_t step = 0; step < 9; ++step) fill(from_start, 2, 8, step, 0, 2, 0, 2);
  CHECK(fill(from_start, 2, 8, 9, 1, 2, 1, 2) == at_step_9);
  CHECK(fill(resumed, 2, 8, 9, 1, 2, 1, 2) == at_step_9);  // and again, from the cache
}

TEST_CASE("data-parallel ranks get disjoint windows, and an epoch visits every window once") {
  const TokenDataset dataset = counting_dataset(24 * 9 + 5);  // T = 8: 24 windows
  const int64_t T = 8, B = 2, dp = 3, accum = 2;
  const BatchSampler sampler(dataset, T, B, 11);
  REQUIRE(sampler.num_windows() == 24);
  // 2 steps x 2 micro-batches x 3 ranks x 2 rows = 24 samples: exactly epoch 0; steps 2-3 are epoch 1.
  std::vector<std::vector<int64_t>> epoch_orders(2);
  for (int64_t step = 0; step < 4; ++step) {
    for (int64_t micro = 0; micro < accum; ++micro) {
      std::set<int64_t> this_micro_batch;
      for (int64_t rank = 0; rank < dp; ++rank) {
        for (int64_t w : windows_of(fill(sampler, B, T, step, micro, accum, rank, dp), B, T, 24)) {
          CHECK(this_micro_batch.insert(w).second);  // no other rank has it
          epoch_orders[step / 2].push_back(w);
        }
      }
    }
  }
  for (const auto& order : epoch_orders) {
    std::vector<int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int64_t> all(24);
    for (int64_t w = 0; w < 24; ++w) all[w] = w;
    CHECK(sorted == all);
  }
  CHECK(epoch_orders[0] != epoch_orders[1]);  // each epoch has its own order
}

TEST_CASE("the seed decides the order") {
  const TokenDataset dataset = counting_dataset(2000);
  const BatchSampler a(dataset, 4, 1, 1), a_again(dataset, 4, 1, 1), b(dataset, 4, 1, 2);
  std::vector<int64_t> order_a, order_a_again, order_b;
  for (int64_t g = 0; g < a.num_windows(); ++g) {
    order_a.push_back(a.window_of_sample(g));
    order_a_again.push_back(a_again.window_of_sample(g));
    order_b.push_back(b.window_of_sample(g));
  }
  CHECK(order_a == order_a_again);
  CHECK(order_a != order_b);
  std::vector<int64_t> identity(order_a.size());
  for (size_t i = 0; i < identity.size(); ++i) identity[i] = static_cast<int64_t>(i);
  CHECK(order_a != identity);  // shuffled, not in stream order
}

TEST_CASE("a dataset shorter than one window is a UserError") {
  const TokenDataset dataset = counting_dataset(8);
  CHECK_THAT(user_error_of([&] { BatchSampler(dataset, 8, 1, 0); }),
             Contains("has 8 tokens, fewer than one sample of train.seq_len + 1 = 9 tokens"));
  CHECK(BatchSampler(dataset, 7, 1, 0).num_windows() == 1);
}

TEST_CASE("splitmix64 gives the published sequence, and below() is uniform") {
  moe::SplitMix64 rng(0);
  // The first outputs of splitmix64 seeded with 0 (Vigna's reference implementation).
  CHECK(rng.next() == 0xe220a8397b1dcdafULL);
  CHECK(rng.next() == 0x6e789e6aa1b965f4ULL);
  CHECK(rng.next() == 0x06c45d188009454fULL);

  moe::SplitMix64 draws(123);
  std::vector<int> counts(3, 0);
  for (int i = 0; i < 30000; ++i) counts[draws.below(3)]++;
  for (int c : counts) CHECK(std::abs(c - 10000) < 500);  // about 5 standard deviations
}

TEST_CASE("window_permutation is a permutation, different per epoch") {
  for (int64_t n : {0, 1, 2, 17, 1000}) {
    std::vector<int64_t> p = moe::window_permutation(n, 5, 0);
    std::sort(p.begin(), p.end());
    for (int64_t i = 0; i < n; ++i) CHECK(p[i] == i);
  }
  CHECK(moe::window_permutation(100, 5, 0) == moe::window_permutation(100, 5, 0));
  CHECK(moe::window_permutation(100, 5, 0) != moe::window_permutation(100, 5, 1));
}
