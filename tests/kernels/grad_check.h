// Test helpers for kernels: seeded random inputs, and gradients held against
// central finite differences.
//
// Why these tolerances work in fp32: the checked loss is L = sum(dout * f(x))
// accumulated in double; a float forward carries ~1e-7 relative error, so with
// a step h the finite difference carries ~1e-7 * |L| / h of noise. With
// h = 1e-2 and inputs of order 1 that is ~1e-5 * |L|, while the truncation
// error of a central difference is O(h^2 * f''') ~ 1e-4. Callers pass rtol/atol
// around 1e-2 / 1e-3 accordingly.
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

namespace moe::test {

inline std::vector<float> random_vector(int64_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(gen);
  return v;
}

// sum_i a[i] * b[i] in double.
inline double dot(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// For up to max_checks indices of x (evenly spread), compares analytic[i] with
// (loss(x + h e_i) - loss(x - h e_i)) / 2h. `loss` must read x afresh each call.
inline void check_gradient(const std::function<double()>& loss, float* x, const float* analytic, int64_t n,
                           double rtol = 1e-2, double atol = 1e-3, double h = 1e-2, int64_t max_checks = 64) {
  const int64_t stride = n > max_checks ? n / max_checks : 1;
  for (int64_t i = 0; i < n; i += stride) {
    const float saved = x[i];
    x[i] = static_cast<float>(saved + h);
    const double up = loss();
    x[i] = static_cast<float>(saved - h);
    const double down = loss();
    x[i] = saved;
    const double numeric = (up - down) / (2 * h);
    INFO("index " << i << ": analytic " << analytic[i] << ", finite difference " << numeric);
    CHECK(std::abs(analytic[i] - numeric) <= atol + rtol * std::abs(numeric));
  }
}

}  // namespace moe::test
