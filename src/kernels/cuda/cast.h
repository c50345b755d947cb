// fp32 <-> bf16 conversion on the GPU (device pointers, the backend's stream()). The
// first kernels of the CUDA backend; the rest of the ops follow the signatures
// of src/kernels/ops.h. Available when MOE_TRAIN_HAS_CUDA is 1.
#pragma once

#include <cstdint>

namespace moe::cuda {

// out[i] = bf16(in[i]), rounded to nearest-even.
void f32_to_bf16(uint16_t* out, const float* in, int64_t n);
// out[i] = float(in[i]) (exact).
void bf16_to_f32(float* out, const uint16_t* in, int64_t n);

}  // namespace moe::cuda
