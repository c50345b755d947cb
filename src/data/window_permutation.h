// The order in which the sampler visits windows: a pseudo-random permutation
// per (seed, epoch), built from our own small generator so that the order is
// the same with every compiler and standard library (std::shuffle and the
// std distributions are implementation-defined).
#pragma once

#include <cstdint>
#include <vector>

namespace moe {

// splitmix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number
// generators", 2014): a 64-bit counter stepped by the golden ratio and hashed.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}

  uint64_t next();

  // Uniform in [0, bound), bound >= 1: rejects the few draws that would make
  // `draw % bound` favour small values.
  uint64_t below(uint64_t bound);

 private:
  uint64_t state_;
};

// A permutation of 0..num_windows-1 by Fisher-Yates, driven by a SplitMix64
// whose seed hashes (seed, epoch) together.
std::vector<int64_t> window_permutation(int64_t num_windows, int64_t seed, int64_t epoch);

}  // namespace moe
