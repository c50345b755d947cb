#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

void add(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

}  // namespace moe::cpu
