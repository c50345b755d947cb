#include "src/core/bf16.h"
#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

void cast_f32_to_bf16(uint16_t* out, const float* in, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = f32_to_bf16(in[i]);
}

void cast_bf16_to_f32(float* out, const uint16_t* in, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(in[i]);
}

}  // namespace moe::cpu
