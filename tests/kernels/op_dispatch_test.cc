// The op layer's one dispatch (ops.cc): every op refuses shapes that do not
// fit together and a mix of host and device tensors, with a logic_error that
// names the op, before any kernel runs; the CPU bodies of cast and
// gather_rows give what they did.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "src/core/bf16.h"
#include "src/kernels/ops.h"

namespace {

using Catch::Matchers::Contains;
using moe::DType;
using moe::Tensor;

struct Buffer {
  std::vector<float> data;
  Tensor t;
  explicit Buffer(std::vector<int64_t> shape, DType dtype = DType::kF32) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    data.assign(static_cast<size_t>(n), 0.5f);
    t = moe::view_of(data.data(), shape, dtype);
  }
};

template <typename F>
void expect_refused(const char* op, F&& call) {
  INFO(op);
  try {
    call();
    FAIL("no logic_error");
  } catch (const std::logic_error& e) {
    CHECK_THAT(e.what(), Contains(op));
  }
}

}  // namespace

TEST_CASE("ops refuse shapes that do not fit together, naming the op") {
  Buffer x({4, 8}), w({8}), rstd({4}), bad_w({6}), dx({4, 8}), dout({4, 8}), tokens({4}, DType::kI32);
  Buffer table({10, 8}), narrow({10, 6});
  expect_refused("embedding_backward", [&] { moe::ops::embedding_backward(narrow.t, dout.t, tokens.t); });
  expect_refused("rmsnorm_backward",
                 [&] { moe::ops::rmsnorm_backward(dx.t, bad_w.t, dout.t, x.t, w.t, rstd.t, Tensor{}); });
  Buffer short_residual({4, 6});
  expect_refused("rmsnorm_backward",
                 [&] { moe::ops::rmsnorm_backward(dx.t, w.t, dout.t, x.t, w.t, rstd.t, short_residual.t); });
  Buffer half({4, 8}, DType::kBF16);  // x, y and sum must share one dtype
  expect_refused("add_rmsnorm_forward",
                 [&] { moe::ops::add_rmsnorm_forward(x.t, dx.t, rstd.t, x.t, half.t, w.t, 1e-5f); });
  Buffer a({12}), b({12}), short_b({10});
  expect_refused("swiglu_backward", [&] { moe::ops::swiglu_backward(a.t, short_b.t, a.t, a.t, b.t); });
  Buffer p({16}), g({16}), m({16}), v({15});
  expect_refused("adamw_step", [&] { moe::ops::adamw_step(p.t, g.t, m.t, v.t, {}, 1, 1.0f); });
  Buffer q({1, 4, 2, 8}), k({1, 4, 1, 8}), lse({1, 2, 4}), dk_wrong({1, 4, 2, 8});
  expect_refused("attention_backward",
                 [&] { moe::ops::attention_backward(q.t, dk_wrong.t, k.t, q.t, q.t, k.t, k.t, q.t, lse.t); });
  expect_refused("matmul_forward", [&] { moe::ops::matmul_forward(x.t, x.t, table.t); });
  // The same ops with fitting shapes run.
  auto* ids = reinterpret_cast<int32_t*>(tokens.data.data());
  for (int i = 0; i < 4; ++i) ids[i] = i;
  moe::ops::rmsnorm_backward(dx.t, w.t, dout.t, x.t, w.t, rstd.t, Tensor{});
  moe::ops::embedding_backward(table.t, dout.t, tokens.t.reshaped({4}));
}

TEST_CASE("host and device tensors mixed in one call are refused") {
  Buffer x({4, 8}), y({4, 8});
  Tensor device = y.t;
  device.device = moe::Device::kCuda;  // never dereferenced: the dispatch refuses first
  expect_refused("add", [&] { moe::ops::add(x.t, x.t, device); });
}

TEST_CASE("cast and gather_rows on the CPU") {
  Buffer src({2, 3}), index({2}, DType::kI32), dst({2, 3});
  src.data = {1.0f, 1.00390625f, -2.5f, 3.0f, 4.0f, 5.0f};  // 1 + 2^-8 rounds to even: 1
  std::vector<uint16_t> half(6);
  const Tensor half_t = moe::view_of(half.data(), {2, 3}, DType::kBF16);
  moe::ops::cast(half_t, src.t);
  CHECK(moe::bf16_to_f32(half[1]) == 1.0f);
  CHECK(moe::bf16_to_f32(half[2]) == -2.5f);
  moe::ops::cast(dst.t, half_t);
  CHECK(dst.data[2] == -2.5f);

  auto* ids = reinterpret_cast<int32_t*>(index.data.data());
  ids[0] = 1;
  ids[1] = 0;
  moe::ops::gather_rows(dst.t, src.t, index.t);
  CHECK(dst.data[0] == 3.0f);
  CHECK(dst.data[3] == 1.0f);
  ids[1] = 2;
  expect_refused("gather_rows", [&] { moe::ops::gather_rows(dst.t, src.t, index.t); });
}

// The fused ops on the CPU are their unfused sequences, bit for bit, in fp32
// and in bf16 (where each stored value is rounded, as on a GPU).
TEST_CASE("add_rmsnorm_forward is the add, rounded, then rmsnorm_forward of the stored sum") {
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    INFO(moe::dtype_name(dtype));
    const int64_t N = 3, D = 8;
    std::vector<float> x_f(N * D), y_f(N * D), w_f(D);
    for (size_t i = 0; i < x_f.size(); ++i) x_f[i] = 0.37f * static_cast<float>(i % 11) - 1.3f;
    for (size_t i = 0; i < y_f.size(); ++i) y_f[i] = 0.011f * static_cast<float>(i * i % 17) + 0.2f;
    for (size_t i = 0; i < w_f.size(); ++i) w_f[i] = 1.0f + 0.05f * static_cast<float>(i);
    std::vector<float> f32_store[8];
    std::vector<uint16_t> bf16_store[8];
    // Tensors 0 x, 1 y, 2 w, 3 sum, 4 out, 5 reference sum, 6 reference out.
    auto make = [&](int slot, const std::vector<float>& values, std::vector<int64_t> shape) {
      if (dtype == DType::kF32) {
        f32_store[slot] = values;
        return moe::view_of(f32_store[slot].data(), shape, DType::kF32);
      }
      bf16_store[slot].resize(values.size());
      for (size_t i = 0; i < values.size(); ++i) bf16_store[slot][i] = moe::f32_to_bf16(values[i]);
      return moe::view_of(bf16_store[slot].data(), shape, DType::kBF16);
    };
    const std::vector<float> zeros(N * D, 0.0f);
    const Tensor x = make(0, x_f, {N, D}), y = make(1, y_f, {N, D}), w = make(2, w_f, {D});
    const Tensor sum = make(3, zeros, {N, D}), out = make(4, zeros, {N, D});
    const Tensor ref_sum = make(5, x_f, {N, D}), ref_out = make(6, zeros, {N, D});
    std::vector<float> rstd(N), ref_rstd(N);
    const Tensor rstd_t = moe::view_of(rstd.data(), {N}), ref_rstd_t = moe::view_of(ref_rstd.data(), {N});

    moe::ops::add_rmsnorm_forward(sum, out, rstd_t, x, y, w, 1e-5f);
    moe::ops::add(ref_sum, ref_sum, y);
    moe::ops::rmsnorm_forward(ref_out, ref_rstd_t, ref_sum, w, 1e-5f);

    const size_t bytes = static_cast<size_t>(sum.bytes());
    CHECK(std::memcmp(sum.data, ref_sum.data, bytes) == 0);
    CHECK(std::memcmp(out.data, ref_out.data, bytes) == 0);
    CHECK(rstd == ref_rstd);

    // The sum may be written over x.
    moe::ops::add_rmsnorm_forward(x, out, rstd_t, x, y, w, 1e-5f);
    CHECK(std::memcmp(x.data, ref_sum.data, bytes) == 0);
    CHECK(std::memcmp(out.data, ref_out.data, bytes) == 0);
  }
}

TEST_CASE("rmsnorm_backward writes dx as the residual's gradient plus the norm's") {
  const int64_t N = 2, D = 4;
  std::vector<float> x(N * D), w(D), dout(N * D), rstd(N), out(N * D);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.3f * static_cast<float>(i) - 1.0f;
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.5f + 0.25f * static_cast<float>(i);
  for (size_t i = 0; i < dout.size(); ++i) dout[i] = 0.1f * static_cast<float>(i % 3) - 0.05f;
  moe::cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, D, 1e-5f);
  // The CPU reference accumulates: its dx from zero is the norm's gradient alone.
  std::vector<float> grad(N * D, 0.0f), dw_ref(D, 0.0f);
  moe::cpu::rmsnorm_backward(grad.data(), dw_ref.data(), dout.data(), x.data(), w.data(), rstd.data(), N, D);

  const auto view = [&](std::vector<float>& v, std::vector<int64_t> shape) { return moe::view_of(v.data(), shape); };
  std::vector<float> residual(N * D, 0.75f), dx(N * D, 123.0f), dw(D, 0.0f);
  SECTION("no residual: dx is written, whatever it held") {
    moe::ops::rmsnorm_backward(view(dx, {N, D}), view(dw, {D}), view(dout, {N, D}), view(x, {N, D}), view(w, {D}),
                               view(rstd, {N}), Tensor{});
    CHECK(dx == grad);
  }
  SECTION("a residual: dx = dresidual + the norm's gradient") {
    moe::ops::rmsnorm_backward(view(dx, {N, D}), view(dw, {D}), view(dout, {N, D}), view(x, {N, D}), view(w, {D}),
                               view(rstd, {N}), view(residual, {N, D}));
    for (size_t i = 0; i < dx.size(); ++i) CHECK(dx[i] == 0.75f + grad[i]);
    CHECK(residual == std::vector<float>(N * D, 0.75f));
  }
  SECTION("dx as its own residual: accumulation") {
    moe::ops::rmsnorm_backward(view(residual, {N, D}), view(dw, {D}), view(dout, {N, D}), view(x, {N, D}), view(w, {D}),
                               view(rstd, {N}), view(residual, {N, D}));
    for (size_t i = 0; i < dx.size(); ++i) CHECK(residual[i] == 0.75f + grad[i]);
  }
  CHECK(dw == dw_ref);  // dw accumulates from 0 in every case
}
