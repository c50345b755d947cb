// SwiGLU gate, elementwise: out = silu(a) * b, silu(a) = a * sigmoid(a).
#include <cmath>

#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {
namespace {

// exp(-a) overflows to inf for very negative a, giving sigmoid = 0, not NaN.
inline float sigmoid(float a) { return 1.0f / (1.0f + std::exp(-a)); }

}  // namespace

void swiglu_forward(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * sigmoid(a[i]) * b[i];
}

// d silu(a)/da = sigmoid(a) * (1 + a * (1 - sigmoid(a))).
void swiglu_backward(float* da, float* db, const float* dout, const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float sig = sigmoid(a[i]);
    da[i] = dout[i] * b[i] * sig * (1.0f + a[i] * (1.0f - sig));
    db[i] = dout[i] * a[i] * sig;
  }
}

}  // namespace moe::cpu
