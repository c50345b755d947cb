// The CUDA emulator's bf16: the bit pattern, with the device's conversions
// (round to nearest even, NaN kept quiet). See cuda_runtime.h.
#pragma once

#include <cstdint>
#include <cstring>

#include "cuda_runtime.h"

struct __nv_bfloat16 {
  unsigned short __x;

  __nv_bfloat16() = default;
  __nv_bfloat16(float f) : __x(round(f)) {}
  operator float() const {
    const uint32_t u = static_cast<uint32_t>(__x) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }

  static unsigned short round(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu) != 0)
      return static_cast<unsigned short>((u >> 16) | 0x40u);
    return static_cast<unsigned short>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
  }
};
using nv_bfloat16 = __nv_bfloat16;

inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return static_cast<float>(h); }
