// ops::multiply_noise against its definition (src/kernels/cpu/counter_noise.h):
// each distribution's range and moments, the same draw for the same key and
// another for another seed, step or stream, and the property that makes N
// ranks equal one: micro-batch m of n elements draws elements m*n .. m*n+n-1
// of the stream, so one tensor over micro-batches 0 and 1 holds micro-batch 1's draw.
#include <catch2/catch.hpp>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "src/core/tensor_pool.h"
#include "src/kernels/ops.h"

namespace {

using moe::noise::Distribution;
using moe::noise::Kind;

struct Draw {
  moe::TensorPool pool;
  moe::Tensor key = pool.alloc({moe::noise::kKeyWords}, moe::DType::kI32);

  // noise * 1 for n elements of micro-batch `micro`.
  std::vector<float> operator()(int64_t n, const Distribution& d, int32_t micro, int32_t step = 3, uint64_t stream = 5,
                                int32_t seed = 42) {
    const int32_t words[4] = {seed, 0, step, micro};
    moe::upload(key, words);
    const moe::Tensor ones = pool.alloc({n});
    for (int64_t i = 0; i < n; ++i) ones.f32()[i] = 1.0f;
    const moe::Tensor out = pool.alloc({n});
    moe::ops::multiply_noise(out, ones, key, stream, d);
    return {out.f32(), out.f32() + n};
  }
};

double mean(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += x;
  return s / static_cast<double>(v.size());
}

double variance(const std::vector<float>& v) {
  const double m = mean(v);
  double s = 0;
  for (float x : v) s += (x - m) * (x - m);
  return s / static_cast<double>(v.size());
}

}  // namespace

TEST_CASE("multiply_noise draws each distribution as defined") {
  Draw draw;
  const int64_t n = 200000;
  const std::vector<float> u = draw(n, {Kind::kUniform, 0.9f, 1.1f}, 0);
  for (float x : u) REQUIRE((x > 0.9f && x < 1.1f));
  CHECK(std::abs(mean(u) - 1.0) < 1e-3);
  CHECK(std::abs(variance(u) - 0.04 / 12) < 1e-4);  // (b - a)^2 / 12

  const std::vector<float> keep = draw(n, {Kind::kKeep, 0.75f, 0}, 0);
  int64_t kept = 0;
  for (float x : keep) {
    REQUIRE((x == 0.0f || x == 1.0f / 0.75f));
    kept += x != 0.0f;
  }
  CHECK(std::abs(static_cast<double>(kept) / n - 0.75) < 5e-3);
  CHECK(std::abs(mean(keep) - 1.0) < 1e-2);  // the kept values are scaled by 1 / keep

  const std::vector<float> z = draw(n, {Kind::kNormal, 0, 0}, 0);
  CHECK(std::abs(mean(z)) < 1e-2);
  CHECK(std::abs(variance(z) - 1.0) < 2e-2);
  for (float x : z) REQUIRE(std::isfinite(x));
}

TEST_CASE("multiply_noise_rows draws each row as its place in its own micro-batch, whatever the row order") {
  Draw draw;
  const Distribution d{Kind::kKeep, 0.5f, 0};
  const int64_t R = 5, C = 7;
  const std::vector<float> micro1 = draw(R * C, d, 1);  // micro-batches 1 and 3, rows in order
  const std::vector<float> micro3 = draw(R * C, d, 3);
  // Rows of both micro-batches mixed and shuffled (an expert's rows gathered
  // from two ranks), (micro-batch, row) each; the key is the last draw's, micro-batch 3.
  const int32_t ids[2 * R] = {3, 4, 1, 0, 3, 3, 1, 1, 3, 2};
  const moe::Tensor row_id = draw.pool.alloc({R, 2}, moe::DType::kI32), x = draw.pool.alloc({R, C});
  moe::upload(row_id, ids);
  for (int64_t i = 0; i < R * C; ++i) x.f32()[i] = 1.0f;
  moe::ops::multiply_noise_rows(x, x, row_id, R, draw.key, 5, d);
  for (int64_t r = 0; r < R; ++r) {
    const std::vector<float>& flat = ids[2 * r] == 1 ? micro1 : micro3;
    for (int64_t c = 0; c < C; ++c) REQUIRE(x.f32()[r * C + c] == flat[ids[2 * r + 1] * C + c]);
  }
  const int32_t outside[2 * R] = {3, 0, 3, 1, 3, 2, 3, 3, 3, 5};
  moe::upload(row_id, outside);
  CHECK_THROWS_AS(moe::ops::multiply_noise_rows(x, x, row_id, R, draw.key, 5, d), std::logic_error);
  // noise_row_ids: this micro-batch's rows, tagged with the key's micro-batch.
  const int32_t rows[R] = {4, 0, 3, 1, 2};
  const moe::Tensor rows_t = draw.pool.alloc({R}, moe::DType::kI32), tagged = draw.pool.alloc({R, 2}, moe::DType::kI32);
  moe::upload(rows_t, rows);
  moe::ops::noise_row_ids(tagged, rows_t, draw.key);
  for (int64_t r = 0; r < R; ++r) {
    CHECK(tagged.i32()[2 * r] == 3);
    CHECK(tagged.i32()[2 * r + 1] == rows[r]);
  }
}

TEST_CASE("multiply_noise is a pure function of seed, step, micro-batch, stream and element") {
  Draw draw;
  const Distribution d{Kind::kUniform, 0.5f, 1.5f};
  const int64_t n = 1000;
  CHECK(draw(n, d, 2) == draw(n, d, 2));
  CHECK(draw(n, d, 2, 4) != draw(n, d, 2, 3));                // another step
  CHECK(draw(n, d, 2, 3, 6) != draw(n, d, 2, 3, 5));          // another stream
  CHECK(draw(n, d, 2, 3, 5, 43) != draw(n, d, 2, 3, 5, 42));  // another seed
  // Micro-batch 1 of n elements is the second half of a draw of 2n at micro-batch 0.
  const std::vector<float> both = draw(2 * n, d, 0), second = draw(n, d, 1);
  CHECK(std::vector<float>(both.begin() + n, both.end()) == second);
  // And it multiplies: out = x * noise, in place too.
  moe::TensorPool pool;
  const moe::Tensor key = pool.alloc({4}, moe::DType::kI32), x = pool.alloc({n});
  const int32_t words[4] = {42, 0, 3, 0};
  moe::upload(key, words);
  for (int64_t i = 0; i < n; ++i) x.f32()[i] = static_cast<float>(i) - 400.0f;
  const std::vector<float> noise = draw(n, d, 0);
  moe::ops::multiply_noise(x, x, key, 5, d);
  for (int64_t i = 0; i < n; ++i) REQUIRE(x.f32()[i] == (static_cast<float>(i) - 400.0f) * noise[i]);
}
