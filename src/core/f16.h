// IEEE half precision (binary16) on the host, read-only: Hugging Face
// checkpoints are often stored in F16, and we train from fp32.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace moe {

// Exact: every half value is a float.
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf, or NaN keeping its payload
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);  // rebias 15 -> 127
  } else {
    const float sub = std::ldexp(static_cast<float>(mant), -24);  // zero or subnormal: mant x 2^-24
    std::memcpy(&bits, &sub, 4);
    bits |= sign;
  }
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
}

}  // namespace moe
