// The two 8-bit float formats of FP8 training (Micikevicius et al., "FP8
// Formats for Deep Learning", 2022), on the host and in CUDA kernels, so that
// the CPU reference and the GPU quantise bit for bit alike:
//   E4M3 (bias 7, no infinities, 0x7F NaN, largest 448): weights and activations;
//   E5M2 (bias 15, IEEE-like, largest 57344): gradients.
// Scaling is per tensor and "current": a tensor's scale comes from its own
// largest magnitude (amax) at the moment it is quantised, and is a power of
// two, so that scaling and unscaling are exact and a dequantised value is
// exactly representable in bf16 and fp32.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MOE_FP8_FN __host__ __device__ inline
#else
#define MOE_FP8_FN inline
#endif

namespace moe::fp8 {

enum class Format : uint8_t { kE4M3, kE5M2 };

MOE_FP8_FN int mantissa_bits(Format f) { return f == Format::kE4M3 ? 3 : 2; }
MOE_FP8_FN int exponent_bias(Format f) { return f == Format::kE4M3 ? 7 : 15; }
// The largest finite value and its code (sign bit clear).
MOE_FP8_FN float max_finite(Format f) { return f == Format::kE4M3 ? 448.0f : 57344.0f; }
MOE_FP8_FN uint32_t max_code(Format f) { return f == Format::kE4M3 ? 0x7Eu : 0x7Bu; }
// A NaN of both formats (E4M3's only one; exponent and mantissa all ones in E5M2).
constexpr uint8_t kNaN = 0x7F;

MOE_FP8_FN float float_of_bits(uint32_t bits) {
  float x;
  memcpy(&x, &bits, 4);
  return x;
}

// 2^k for k in [-126, 127], built from its bits (exact, and the same on every device).
MOE_FP8_FN float exp2i(int k) { return float_of_bits(static_cast<uint32_t>(k + 127) << 23); }

// x rounded to the nearest code, ties to even; beyond the largest finite
// value (infinities included) it saturates to it; NaN stays NaN.
MOE_FP8_FN uint8_t encode(float x, Format f) {
  uint32_t bits;
  memcpy(&bits, &x, 4);
  const uint32_t sign = (bits >> 24) & 0x80u;
  const uint32_t exponent_field = (bits >> 23) & 0xFFu;
  if (exponent_field == 0xFFu && (bits & 0x7FFFFFu) != 0) return kNaN | sign;
  const int M = mantissa_bits(f), bias = exponent_bias(f), min_exponent = 1 - bias;
  const int max_exponent = f == Format::kE4M3 ? 8 : 15;
  const float a = x < 0 ? -x : x;
  const int e = static_cast<int>(exponent_field) - 127;  // fp32 subnormals: -127, below either format's range
  if (e > max_exponent) return static_cast<uint8_t>(max_code(f) | sign);
  uint32_t code;
  if (e < min_exponent) {
    // Subnormal codes are the multiples of 2^(min_exponent - M); a count of
    // 2^M of them is the smallest normal, whose code is the same integer.
    code = static_cast<uint32_t>(rintf(a * exp2i(M - min_exponent)));
  } else {
    // 1.m x 2^e: the mantissa rounded to M bits; a carry out of it lands in the exponent field.
    const float fraction = (a * exp2i(-e) - 1.0f) * exp2i(M);
    code = (static_cast<uint32_t>(e + bias) << M) + static_cast<uint32_t>(rintf(fraction));
  }
  if (code > max_code(f)) code = max_code(f);
  return static_cast<uint8_t>(code | sign);
}

MOE_FP8_FN float decode(uint8_t c, Format f) {
  const int M = mantissa_bits(f), bias = exponent_bias(f);
  const uint32_t magnitude = c & 0x7Fu;
  const uint32_t exponent = magnitude >> M, mantissa = magnitude & ((1u << M) - 1u);
  float v;
  if (f == Format::kE4M3 && magnitude == 0x7Fu) {
    v = float_of_bits(0x7FC00000u);
  } else if (f == Format::kE5M2 && exponent == 31) {
    v = float_of_bits(mantissa == 0 ? 0x7F800000u : 0x7FC00000u);
  } else if (exponent == 0) {
    v = static_cast<float>(mantissa) * exp2i(1 - bias - M);
  } else {
    v = static_cast<float>((1u << M) + mantissa) * exp2i(static_cast<int>(exponent) - bias - M);
  }
  return (c & 0x80u) ? -v : v;
}

// The scale of a tensor whose largest magnitude is amax: the power of two
// 2^k with amax x 2^k in (max / 2, max], k in [-126, 126]; 2^0 for a tensor
// of zeros or one that holds an infinity or NaN (the step is then skipped as
// non-finite anyway). Returned as k.
MOE_FP8_FN int scale_exponent(float amax, Format f) {
  if (!(amax > 0.0f) || !(amax <= 3.4028234663852886e38f)) return 0;
  const float ratio = max_finite(f) / amax;  // may be +inf for a tiny amax
  uint32_t bits;
  memcpy(&bits, &ratio, 4);
  int k = static_cast<int>((bits >> 23) & 0xFFu) - 127;  // floor(log2(ratio)) for a normal ratio
  if (k > 126) k = 126;
  if (k < -126) k = -126;
  return k;
}

// What a GEMM on the quantised tensor computes with: code / scale.
MOE_FP8_FN float quantize_dequantize(float x, int scale_k, Format f) {
  return decode(encode(x * exp2i(scale_k), f), f) * exp2i(-scale_k);
}

}  // namespace moe::fp8
