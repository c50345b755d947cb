#include "src/data/window_permutation.h"

#include <stdexcept>
#include <utility>

#include "src/core/splitmix64.h"

namespace moe {

uint64_t SplitMix64::next() {
  state_ += kSplitMix64Gamma;
  return splitmix64_mix(state_);
}

uint64_t SplitMix64::below(uint64_t bound) {
  if (bound == 0) throw std::invalid_argument("SplitMix64::below: bound must be >= 1");
  // 2^64 mod bound: drawing from [threshold, 2^64) leaves a multiple of bound values.
  const uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    const uint64_t draw = next();
    if (draw >= threshold) return draw % bound;
  }
}

std::vector<int64_t> window_permutation(int64_t num_windows, int64_t seed, int64_t epoch) {
  if (num_windows < 0 || epoch < 0) throw std::invalid_argument("window_permutation: negative size or epoch");
  // Hash the epoch before combining, so that nearby (seed, epoch) pairs give unrelated streams.
  SplitMix64 rng(splitmix64_mix(static_cast<uint64_t>(seed)) ^ splitmix64(static_cast<uint64_t>(epoch)));
  std::vector<int64_t> order(static_cast<size_t>(num_windows));
  for (int64_t i = 0; i < num_windows; ++i) order[i] = i;
  for (int64_t i = num_windows - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

}  // namespace moe
