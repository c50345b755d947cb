// splitmix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number
// generators", 2014), the one definition every counter-based draw uses:
// parameter init (rng.h), the data order (data/window_permutation.h) and the
// noise of training (kernels/cpu/counter_noise.h), on the host and in CUDA kernels.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define MOE_SPLITMIX64_FN __host__ __device__ inline
#else
#define MOE_SPLITMIX64_FN inline
#endif

namespace moe {

// The step between states (the golden ratio's fraction, 2^64 / phi).
constexpr uint64_t kSplitMix64Gamma = 0x9E3779B97F4A7C15ull;

// The output function: a bijective 64-bit hash.
MOE_SPLITMIX64_FN uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The value after state x: mix(x + gamma).
MOE_SPLITMIX64_FN uint64_t splitmix64(uint64_t x) { return splitmix64_mix(x + kSplitMix64Gamma); }

}  // namespace moe
