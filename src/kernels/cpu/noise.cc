#include <cmath>
#include <stdexcept>
#include <string>

#include "src/kernels/cpu/counter_noise.h"
#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

void multiply_noise(float* out, const float* x, int64_t n, const int32_t* key_words, uint64_t stream,
                    const noise::Distribution& d) {
  const uint64_t key = noise::stream_key(key_words, stream), first = noise::first_index(key_words, n);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * noise::value(d, key, first + static_cast<uint64_t>(i));
}

void multiply_noise_rows(float* out, const float* x, int64_t R, int64_t C, const int32_t* row_id_R2,
                         int64_t rows_per_micro_batch, const int32_t* key_words, uint64_t stream,
                         const noise::Distribution& d) {
  const uint64_t key = noise::stream_key(key_words, stream);
  for (int64_t r = 0; r < R; ++r) {
    const int32_t micro = row_id_R2[2 * r], draw_row = row_id_R2[2 * r + 1];
    if (micro < 0 || draw_row < 0 || draw_row >= rows_per_micro_batch) {
      throw std::logic_error("multiply_noise_rows: row " + std::to_string(r) + " is draw row " +
                             std::to_string(draw_row) + " of micro-batch " + std::to_string(micro) + ", outside [0, " +
                             std::to_string(rows_per_micro_batch) + ")");
    }
    const uint64_t row = noise::row_first_index(micro, draw_row, rows_per_micro_batch, C);
    for (int64_t c = 0; c < C; ++c) {
      out[r * C + c] = x[r * C + c] * noise::value(d, key, row + static_cast<uint64_t>(c));
    }
  }
}

void noise_row_ids(int32_t* ids_R2, const int32_t* rows_R, int64_t R, const int32_t* key_words) {
  for (int64_t r = 0; r < R; ++r) {
    ids_R2[2 * r] = key_words[3];
    ids_R2[2 * r + 1] = rows_R[r];
  }
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
