// ops::fp8_matmul_forward/backward against their definition, written out
// here in double loops: every operand quantised to its format with the
// power-of-two scale of its own amax (src/core/fp8.h), then the products,
//   out = Q4(x) Q4(W)^T;  dx += Q5(dout) Q4(W);  dW += Q5(dout)^T Q4(x).
// And the properties training relies on: the rounding is really there (the
// result is not the plain GEMM's), a tensor's scale follows its own amax (a
// tensor 1000 times smaller quantises to the same codes), and values already
// on the FP8 grid pass through exactly.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "src/core/fp8.h"
#include "src/core/tensor_pool.h"
#include "src/kernels/ops.h"

namespace {

using moe::Tensor;
using moe::fp8::Format;

std::vector<float> gaussian(size_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Q(v): the definition, from the codes.
std::vector<double> quantized(const std::vector<float>& v, Format f) {
  float amax = 0;
  for (const float x : v) amax = std::max(amax, std::fabs(x));
  const int k = moe::fp8::scale_exponent(amax, f);
  std::vector<double> q(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    q[i] =
        static_cast<double>(moe::fp8::decode(moe::fp8::encode(v[i] * std::ldexp(1.0f, k), f), f)) * std::ldexp(1.0, -k);
  }
  return q;
}

Tensor filled(moe::TensorPool& pool, std::initializer_list<int64_t> shape, const std::vector<float>& v) {
  const Tensor t = pool.alloc(shape);
  for (size_t i = 0; i < v.size(); ++i) t.f32()[i] = v[i];
  return t;
}

constexpr int64_t N = 32, I = 48, O = 16;

TEST_CASE("fp8_matmul_forward is the GEMM of the E4M3-quantised operands") {
  moe::TensorPool pool;
  const std::vector<float> x = gaussian(N * I, 1.0f, 1), w = gaussian(O * I, 0.02f, 2);
  const Tensor tx = filled(pool, {N, I}, x), tw = filled(pool, {O, I}, w), out = pool.alloc({N, O});
  const Tensor plain = pool.alloc({N, O});
  moe::ops::fp8_matmul_forward(out, tx, tw);
  moe::ops::matmul_forward(plain, tx, tw);
  const std::vector<double> qx = quantized(x, Format::kE4M3), qw = quantized(w, Format::kE4M3);
  double largest_rounding = 0;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t o = 0; o < O; ++o) {
      double want = 0, magnitude = 0;
      for (int64_t i = 0; i < I; ++i) {
        want += qx[n * I + i] * qw[o * I + i];
        magnitude += std::fabs(qx[n * I + i] * qw[o * I + i]);
      }
      const double got = out.f32()[n * O + o];
      INFO("out[" << n << ", " << o << "]");
      REQUIRE(std::fabs(got - want) <= 1e-6 * magnitude);
      largest_rounding = std::max(largest_rounding, std::fabs(plain.f32()[n * O + o] - got) / magnitude);
    }
  }
  // E4M3 keeps 3 mantissa bits: the rounding shows, at about 2^-5 of the magnitude.
  CHECK(largest_rounding > 1e-3);
  CHECK(largest_rounding < 0.1);
}

TEST_CASE("fp8_matmul_backward is the straight-through gradient with an E5M2 output gradient") {
  moe::TensorPool pool;
  const std::vector<float> x = gaussian(N * I, 1.0f, 3), w = gaussian(O * I, 0.02f, 4);
  const std::vector<float> dout = gaussian(N * O, 1e-4f, 5), dx0 = gaussian(N * I, 1e-3f, 6);
  const std::vector<float> dw0 = gaussian(O * I, 1e-3f, 7);
  const Tensor tx = filled(pool, {N, I}, x), tw = filled(pool, {O, I}, w), tdout = filled(pool, {N, O}, dout);
  for (const auto into : {moe::ops::GradInto::kAdd, moe::ops::GradInto::kWrite}) {
    const Tensor dx = filled(pool, {N, I}, dx0), dw = filled(pool, {O, I}, dw0);
    moe::ops::fp8_matmul_backward(dx, dw, tdout, tx, tw, into);
    const std::vector<double> qx = quantized(x, Format::kE4M3), qw = quantized(w, Format::kE4M3);
    const std::vector<double> qd = quantized(dout, Format::kE5M2);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t i = 0; i < I; ++i) {
        double want = into == moe::ops::GradInto::kAdd ? dx0[n * I + i] : 0.0, magnitude = std::fabs(want);
        for (int64_t o = 0; o < O; ++o) {
          want += qd[n * O + o] * qw[o * I + i];
          magnitude += std::fabs(qd[n * O + o] * qw[o * I + i]);
        }
        INFO("dx[" << n << ", " << i << "]");
        REQUIRE(std::fabs(dx.f32()[n * I + i] - want) <= 1e-6 * magnitude);
      }
    }
    for (int64_t o = 0; o < O; ++o) {
      for (int64_t i = 0; i < I; ++i) {
        double want = dw0[o * I + i], magnitude = std::fabs(want);
        for (int64_t n = 0; n < N; ++n) {
          want += qd[n * O + o] * qx[n * I + i];
          magnitude += std::fabs(qd[n * O + o] * qx[n * I + i]);
        }
        INFO("dw[" << o << ", " << i << "]");
        REQUIRE(std::fabs(dw.f32()[o * I + i] - want) <= 1e-6 * magnitude);
      }
    }
  }
}

TEST_CASE("each tensor is scaled by its own amax; values on the FP8 grid pass through") {
  moe::TensorPool pool;
  const std::vector<float> x = gaussian(N * I, 1.0f, 8);
  std::vector<float> small(x.size());
  for (size_t i = 0; i < x.size(); ++i) small[i] = x[i] * std::ldexp(1.0f, -10);
  const Tensor a = filled(pool, {N * I}, x), b = filled(pool, {N * I}, small);
  moe::cpu::fp8_quantize_dequantize(a.f32(), a.f32(), N * I, static_cast<int>(Format::kE4M3));
  moe::cpu::fp8_quantize_dequantize(b.f32(), b.f32(), N * I, static_cast<int>(Format::kE4M3));
  for (int64_t i = 0; i < N * I; ++i) REQUIRE(b.f32()[i] == a.f32()[i] * std::ldexp(1.0f, -10));
  // Quantising a quantised tensor changes nothing (its amax, and so its scale, is kept).
  std::vector<float> again(a.f32(), a.f32() + N * I);
  moe::cpu::fp8_quantize_dequantize(again.data(), again.data(), N * I, static_cast<int>(Format::kE4M3));
  for (int64_t i = 0; i < N * I; ++i) REQUIRE(again[static_cast<size_t>(i)] == a.f32()[i]);
}

}  // namespace
