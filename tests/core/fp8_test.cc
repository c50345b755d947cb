// The FP8 formats (src/core/fp8.h) against an independent implementation
// (ml_dtypes, tests/reference/fp8/conversions.txt), and the rules that file
// cannot show: saturation, NaN, and the power-of-two scale.
#include "src/core/fp8.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

namespace moe {
namespace {

float from_bits(uint32_t b) {
  float x;
  std::memcpy(&x, &b, 4);
  return x;
}

uint32_t bits_of(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}

fp8::Format format_named(const std::string& name) {
  if (name == "e4m3") return fp8::Format::kE4M3;
  REQUIRE(name == "e5m2");
  return fp8::Format::kE5M2;
}

TEST_CASE("FP8 decoding and rounding equal ml_dtypes on every code and on ties", "[fp8]") {
  std::ifstream in("tests/reference/fp8/conversions.txt");
  REQUIRE(in.good());
  std::string line;
  int decoded = 0, encoded = 0, ties_seen = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string format, kind, input, output;
    fields >> format >> kind >> input >> output;
    const fp8::Format f = format_named(format);
    if (kind == "decode") {
      const float got = fp8::decode(static_cast<uint8_t>(std::stoul(input, nullptr, 16)), f);
      if (output == "nan") {
        CHECK(std::isnan(got));
      } else {
        INFO(line);
        CHECK(bits_of(got) == static_cast<uint32_t>(std::stoul(output, nullptr, 16)));
      }
      ++decoded;
    } else {
      REQUIRE(kind == "encode");
      const float x = from_bits(static_cast<uint32_t>(std::stoul(input, nullptr, 16)));
      const auto want = static_cast<unsigned>(std::stoul(output, nullptr, 16));
      INFO(line << " (x = " << x << ")");
      CHECK(static_cast<unsigned>(fp8::encode(x, f)) == want);
      // A value halfway between two codes: the even one.
      const float a = std::fabs(x);
      if (std::fabs(fp8::decode(static_cast<uint8_t>(want), f)) != a) ++ties_seen;
      ++encoded;
    }
  }
  CHECK(decoded == 512);
  CHECK(encoded > 4000);
  CHECK(ties_seen > 1000);
}

TEST_CASE("FP8 saturates beyond the largest value, keeps NaN and signed zero", "[fp8]") {
  for (const fp8::Format f : {fp8::Format::kE4M3, fp8::Format::kE5M2}) {
    const float max = fp8::max_finite(f);
    const auto max_code = static_cast<uint8_t>(fp8::max_code(f));
    CHECK(fp8::decode(max_code, f) == max);
    for (const float x : {max * 1.01f, max * 1000.0f, 3.0e38f, std::numeric_limits<float>::infinity()}) {
      CHECK(fp8::encode(x, f) == max_code);
      CHECK(fp8::encode(-x, f) == (max_code | 0x80));
    }
    CHECK(std::isnan(fp8::decode(fp8::encode(std::nanf(""), f), f)));
    CHECK(fp8::encode(0.0f, f) == 0x00);
    CHECK(fp8::encode(-0.0f, f) == 0x80);
  }
  CHECK(fp8::max_finite(fp8::Format::kE4M3) == 448.0f);
  CHECK(fp8::max_finite(fp8::Format::kE5M2) == 57344.0f);
}

TEST_CASE("FP8 scales are powers of two that bring amax into (max / 2, max]", "[fp8]") {
  for (const fp8::Format f : {fp8::Format::kE4M3, fp8::Format::kE5M2}) {
    const float max = fp8::max_finite(f);
    for (const float amax : {1e-30f, 3.7e-6f, 0.02f, 1.0f, 447.0f, 448.0f, 449.0f, 6.0e4f, 1e30f}) {
      const int k = fp8::scale_exponent(amax, f);
      const float scaled = amax * fp8::exp2i(k);
      INFO("amax " << amax << " k " << k);
      CHECK(scaled <= max);
      CHECK(scaled > max / 2);
    }
    // Nothing to scale, or nothing finite: 2^0.
    CHECK(fp8::scale_exponent(0.0f, f) == 0);
    CHECK(fp8::scale_exponent(std::numeric_limits<float>::infinity(), f) == 0);
    CHECK(fp8::scale_exponent(std::nanf(""), f) == 0);
    // A tiny amax: the scale stops at 2^126.
    CHECK(fp8::scale_exponent(1e-44f, f) == 126);
  }
}

TEST_CASE("Quantise-dequantise is exact on representable values and rounds the rest", "[fp8]") {
  const fp8::Format f = fp8::Format::kE4M3;
  const int k = fp8::scale_exponent(3.0f, f);  // 448 / 3 = 149.3: 2^7
  CHECK(k == 7);
  // 1.125 x 2^-7 x 2^7 = 1.125 is a code: exact.
  CHECK(fp8::quantize_dequantize(1.125f / 128.0f * 128.0f / 128.0f, k, f) == 1.125f / 128.0f);
  // 3 x 2^7 = 384 is a code (1.5 x 2^8).
  CHECK(fp8::quantize_dequantize(3.0f, k, f) == 3.0f);
  // 1.1 x 128 = 140.8 lies between the codes 136 and 144: 144 / 128.
  CHECK(fp8::quantize_dequantize(1.1f, k, f) == 144.0f / 128.0f);
  // E5M2 keeps two mantissa bits: 1.3 -> 1.25.
  CHECK(fp8::quantize_dequantize(1.3f, 0, fp8::Format::kE5M2) == 1.25f);
}

}  // namespace
}  // namespace moe
