// The op layer's one dispatch (ops.cc): every op refuses shapes that do not
// fit together and a mix of host and device tensors, with a logic_error that
// names the op, before any kernel runs; the CPU bodies of cast and
// gather_rows give what they did.
#include <catch2/catch.hpp>

#include <cstdint>
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
  expect_refused("rmsnorm_backward", [&] { moe::ops::rmsnorm_backward(dx.t, bad_w.t, dout.t, x.t, w.t, rstd.t); });
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
  moe::ops::rmsnorm_backward(dx.t, w.t, dout.t, x.t, w.t, rstd.t);
  moe::ops::embedding_backward(table.t, dout.t, tokens.t.reshaped({4}));
}

TEST_CASE("host and device tensors mixed in one call are refused") {
  Buffer x({4, 8}), y({4, 8});
  Tensor device = y.t;
  device.device = moe::Device::kCuda;  // never dereferenced: the dispatch refuses first
  expect_refused("add_inplace", [&] { moe::ops::add_inplace(x.t, device); });
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
