// Counter-based random numbers: value i of stream `key` is a pure function of
// (key, i). Parameter init uses it with key = hash(seed, parameter name) and
// i = the element's index in the global tensor, so the initial weights are
// the same whatever the parallel layout or the order tensors are built in.
#pragma once

#include <cstdint>
#include <string>

#include "src/core/splitmix64.h"

namespace moe {

// A 64-bit key from a seed and a name (FNV-1a over the name, mixed with the seed).
uint64_t stream_key(uint64_t seed, const std::string& name);
// Uniform in (0, 1), never exactly 0 or 1.
double uniform_at(uint64_t key, uint64_t index);
// Standard normal (Box-Muller over a pair of uniforms; even/odd indices share a pair).
double normal_at(uint64_t key, uint64_t index);

}  // namespace moe
