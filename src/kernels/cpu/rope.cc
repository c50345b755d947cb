// Rotary position embedding, rotate-half convention of HF Llama/Mixtral.
// Legend: N = B*T rows, T sequence length, H heads, Dh head dim (even).
#include <cmath>

#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {
namespace {

// Rotates every pair (x[i], x[i + Dh/2]) of every head by sign * pos * inv_freq[i].
// inv_freq and the angle are fp32, as HF computes them, so cos/sin match its cache.
// Each (position, frequency) pair is evaluated once and applied to all H heads,
// so no cos/sin table needs to be stored.
void rotate(float* x_NHDh, int64_t N, int64_t T, int64_t H, int64_t Dh, float theta, float sign, int64_t first) {
  const int64_t half = Dh / 2;
  for (int64_t n = 0; n < N; ++n) {
    const auto pos = static_cast<float>(first + n % T);
    float* row_HDh = x_NHDh + n * H * Dh;
    for (int64_t i = 0; i < half; ++i) {
      const float inv_freq = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(Dh));
      const float angle = pos * inv_freq;
      const float c = std::cos(angle);
      const float s = sign * std::sin(angle);
      for (int64_t h = 0; h < H; ++h) {
        float* x_Dh = row_HDh + h * Dh;
        const float lo = x_Dh[i];
        const float hi = x_Dh[i + half];
        x_Dh[i] = lo * c - hi * s;
        x_Dh[i + half] = hi * c + lo * s;
      }
    }
  }
}

}  // namespace

void rope_forward(float* x_NHDh, int64_t N, int64_t T, int64_t H, int64_t Dh, float theta, int64_t first_position) {
  rotate(x_NHDh, N, T, H, Dh, theta, 1.0f, first_position);
}

// The rotation is orthogonal, so its transpose (the gradient map) is the
// rotation by the opposite angle.
void rope_backward(float* dx_NHDh, int64_t N, int64_t T, int64_t H, int64_t Dh, float theta) {
  rotate(dx_NHDh, N, T, H, Dh, theta, -1.0f, 0);
}

}  // namespace moe::cpu
