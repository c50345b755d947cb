// Host bf16 conversion: round to nearest-even, NaN and infinities kept.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>

#include "src/core/bf16.h"

namespace {

float from_bits(uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
}

}  // namespace

TEST_CASE("fp32 to bf16 rounds to nearest, ties to even") {
  CHECK(moe::f32_to_bf16(1.0f) == 0x3F80);
  CHECK(moe::bf16_to_f32(0x3F80) == 1.0f);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 (even) and 1 + 2^-7: rounds down to even.
  CHECK(moe::f32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3F80);
  // 1 + 3*2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: rounds up to even.
  CHECK(moe::f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3F82);
  // Just above halfway rounds up.
  CHECK(moe::f32_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)) == 0x3F81);
  CHECK(moe::f32_to_bf16(-2.0f) == 0xC000);
}

TEST_CASE("special values survive") {
  CHECK(moe::f32_to_bf16(std::numeric_limits<float>::infinity()) == 0x7F80);
  CHECK(std::isnan(moe::bf16_to_f32(moe::f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN whose payload sits only in the low bits must not round into infinity.
  CHECK(std::isnan(moe::bf16_to_f32(moe::f32_to_bf16(from_bits(0x7F800001u)))));
  // The largest float rounds up past bf16's range to infinity.
  CHECK(moe::f32_to_bf16(std::numeric_limits<float>::max()) == 0x7F80);
  CHECK(moe::f32_to_bf16(0.0f) == 0);
}
