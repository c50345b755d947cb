// bfloat16 on the host: the upper 16 bits of an IEEE float, rounded to
// nearest-even (as CUDA's __float2bfloat16_rn does). Used to check the GPU's
// conversions and, later, to read and write bf16 tensors in files.
#pragma once

#include <cstdint>
#include <cstring>

namespace moe {

inline uint16_t f32_to_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // NaN stays NaN (quiet)
  }
  const uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);  // ties to even
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

inline float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
}

}  // namespace moe
