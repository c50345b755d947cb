#include "src/kernels/cpu/counter_noise.h"
#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

void multiply_noise(float* out, const float* x, int64_t n, const int32_t* key_words, uint64_t stream,
                    const noise::Distribution& d) {
  const uint64_t key = noise::stream_key(key_words, stream), first = noise::first_index(key_words, n);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * noise::value(d, key, first + static_cast<uint64_t>(i));
}

}  // namespace moe::cpu
