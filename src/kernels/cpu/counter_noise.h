// The random numbers of training (router jitter, noisy gating, dropout), one
// definition for the CPU and the GPU: noise i of a draw is a pure function of
// (seed, step, micro-batch, stream, i), hashed with splitmix64 (core/splitmix64.h), so that
//   - the ranks of any layout draw what one process draws: the micro-batch is
//     the global one (data-parallel rank d's micro-batch m is micro-batch
//     m x D + d of one process) and i the element's index in it;
//   - a backward and a checkpointed recompute draw the forward's noise again
//     instead of keeping it;
//   - the key (seed, step, micro-batch) lives in a device tensor, so a
//     replayed CUDA graph draws new noise each micro-batch.
// Uniform draws are 24-bit floats in (0, 1), the same bits on every backend.
#pragma once

#include <cmath>
#include <cstdint>

#include "src/core/splitmix64.h"

#if defined(__CUDACC__)
#define MOE_NOISE_FN __host__ __device__ inline
#else
#define MOE_NOISE_FN inline
#endif

namespace moe::noise {

// What multiplies each element.
enum class Kind : int32_t {
  kUniform,  // uniform in (a, b): Switch's and Megatron's router jitter, a = 1 - eps, b = 1 + eps
  kNormal,   // standard normal (a, b unused): noisy top-k gating
  kKeep,     // 1 / a with probability a, else 0 (b unused): dropout that keeps a share a
};

struct Distribution {
  Kind kind = Kind::kUniform;
  float a = 1, b = 1;
};

// A draw's key on the device: seed (two words), step, global micro-batch.
constexpr int64_t kKeyWords = 4;

// The stream's key of one micro-batch.
MOE_NOISE_FN uint64_t stream_key(const int32_t* key_words, uint64_t stream) {
  const uint64_t seed = static_cast<uint64_t>(static_cast<uint32_t>(key_words[0])) |
                        (static_cast<uint64_t>(static_cast<uint32_t>(key_words[1])) << 32);
  const auto step = static_cast<uint64_t>(static_cast<uint32_t>(key_words[2]));
  return splitmix64(splitmix64(splitmix64(seed) ^ step) ^ stream);
}

// The first element index of a micro-batch of n elements.
MOE_NOISE_FN uint64_t first_index(const int32_t* key_words, int64_t n) {
  return static_cast<uint64_t>(static_cast<uint32_t>(key_words[3])) * static_cast<uint64_t>(n);
}

// The first element index of row `row` of global micro-batch `micro`, in
// micro-batches of rows_per_micro_batch rows of C elements: what
// first_index gives that micro-batch, plus the row's offset.
MOE_NOISE_FN uint64_t row_first_index(int32_t micro, int32_t row, int64_t rows_per_micro_batch, int64_t C) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(micro)) * static_cast<uint64_t>(rows_per_micro_batch) +
          static_cast<uint64_t>(static_cast<uint32_t>(row))) *
         static_cast<uint64_t>(C);
}

// Uniform in (0, 1): the top 24 bits, centred in their bin (exact in float).
MOE_NOISE_FN float uniform01(uint64_t key, uint64_t index, uint64_t salt = 0) {
  const uint64_t bits = splitmix64(key ^ splitmix64(2 * index + salt));
  return (static_cast<float>(bits >> 40) + 0.5f) * (1.0f / 16777216.0f);
}

// Element `index` of a draw. fmaf keeps the uniform's bits the same on the
// CPU and the GPU; the normal's log and cos may differ there in the last bit.
MOE_NOISE_FN float value(const Distribution& d, uint64_t key, uint64_t index) {
  switch (d.kind) {
    case Kind::kUniform: return fmaf(d.b - d.a, uniform01(key, index), d.a);
    case Kind::kKeep: return uniform01(key, index) < d.a ? 1.0f / d.a : 0.0f;
    case Kind::kNormal: {
      const float u1 = uniform01(key, index, 0), u2 = uniform01(key, index, 1);
      return sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);  // Box-Muller
    }
  }
  return 0.0f;
}

}  // namespace moe::noise
