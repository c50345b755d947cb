#include <cmath>

#include "src/kernels/cpu/counter_noise.h"
#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

void multiply_noise(float* out, const float* x, int64_t n, const int32_t* key_words, uint64_t stream,
                    const noise::Distribution& d) {
  const uint64_t key = noise::stream_key(key_words, stream), first = noise::first_index(key_words, n);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * noise::value(d, key, first + static_cast<uint64_t>(i));
}

void router_noise_forward(float* logits, const float* noise_logits, int64_t n, const int32_t* key_words,
                          uint64_t stream) {
  const uint64_t key = noise::stream_key(key_words, stream), first = noise::first_index(key_words, n);
  const noise::Distribution normal{noise::Kind::kNormal, 0, 0};
  for (int64_t i = 0; i < n; ++i) {
    const float x = noise_logits[i];
    const float softplus = std::fmax(x, 0.0f) + std::log1p(std::exp(-std::fabs(x)));
    logits[i] += noise::value(normal, key, first + static_cast<uint64_t>(i)) * softplus;
  }
}

void router_noise_backward(float* dnoise_logits, const float* dlogits, const float* noise_logits, int64_t n,
                           const int32_t* key_words, uint64_t stream) {
  const uint64_t key = noise::stream_key(key_words, stream), first = noise::first_index(key_words, n);
  const noise::Distribution normal{noise::Kind::kNormal, 0, 0};
  for (int64_t i = 0; i < n; ++i) {
    const float sigmoid = 1.0f / (1.0f + std::exp(-noise_logits[i]));  // softplus'
    dnoise_logits[i] = dlogits[i] * noise::value(normal, key, first + static_cast<uint64_t>(i)) * sigmoid;
  }
}

}  // namespace moe::cpu
