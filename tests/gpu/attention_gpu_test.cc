// GPU causal attention (ops::attention_forward/backward on device tensors,
// src/kernels/cuda/attention.cu) against the CPU reference on the same inputs:
// for BF16 the inputs are rounded to bf16 first, so both sides see the same
// numbers and the tolerance covers only the GPU's bf16 intermediates (P and
// dS rounded for the tensor-core GEMMs) and its bf16 outputs.
//
// Tolerances, |got - want| <= atol + rtol * |want| with atol = frac * max|x|
// + 4e-6, x the quantity the op computes (out, or the gradients it writes):
// - F32 (fp32 everywhere, different summation order): rtol 1e-4, frac 1e-4.
// - BF16 (bf16 P, dS and outputs, fp32 accumulation): rtol 2e-2, frac 2e-2.
// - lse is F32 for both (fp32 softmax statistics): rtol 1e-4, atol 1e-4
//   (F32) or 1e-3 (BF16: the scores come from tensor-core fp32 sums).
#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "src/core/cuda_device.h"
#include "src/core/tensor.h"
#include "src/kernels/cpu/cpu_ops.h"
#include "src/kernels/ops.h"
#include "tests/gpu/gpu_test_util.h"

namespace {

using moe::DType;
using moe::test::DeviceTensor;

struct Case {
  DType dtype;
  int64_t B, T, H, G, Dh;

  std::string name() const {
    return std::string(moe::dtype_name(dtype)) + " B=" + std::to_string(B) + " T=" + std::to_string(T) +
           " H=" + std::to_string(H) + " G=" + std::to_string(G) + " Dh=" + std::to_string(Dh);
  }
  bool bf16() const { return dtype == DType::kBF16; }
  std::vector<int64_t> q_shape() const { return {B, T, H, Dh}; }
  std::vector<int64_t> kv_shape() const { return {B, T, G, Dh}; }
  std::vector<int64_t> lse_shape() const { return {B, H, T}; }
  size_t q_size() const { return static_cast<size_t>(B * T * H * Dh); }
  size_t kv_size() const { return static_cast<size_t>(B * T * G * Dh); }
  size_t lse_size() const { return static_cast<size_t>(B * H * T); }
};

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::abs(x)));
  return m;
}

// rtol and the fraction of max|computed| used as atol, per dtype (see the top of the file).
double rtol(const Case& c) { return c.bf16() ? 2e-2 : 1e-4; }
// The 4e-6 floor: where the exact gradient is 0 (T = 1: one key, so dS =
// P (dP - D) cancels), both sides keep the fp32 rounding of dP and D, sums of
// Dh products of order 1: about 1e-6 each, of either sign.
double atol(const Case& c, const std::vector<float>& computed) {
  return (c.bf16() ? 2e-2 : 1e-4) * max_abs(computed) + 4e-6;
}

// Inputs as the device stores them: bf16-rounded for BF16.
std::vector<float> as_stored(const Case& c, std::vector<float> v) {
  return c.bf16() ? moe::test::bf16_rounded(std::move(v)) : v;
}

struct Inputs {
  std::vector<float> q, k, v, dout, dq0, dk0, dv0;  // dq0, dk0, dv0: garbage the backward must overwrite
};

Inputs random_inputs(const Case& c, uint32_t seed) {
  using moe::test::random_vector;
  Inputs in;
  in.q = as_stored(c, random_vector(c.q_size(), seed + 1));
  in.k = as_stored(c, random_vector(c.kv_size(), seed + 2));
  in.v = as_stored(c, random_vector(c.kv_size(), seed + 3));
  in.dout = as_stored(c, random_vector(c.q_size(), seed + 4));
  in.dq0 = as_stored(c, random_vector(c.q_size(), seed + 5, 0.5f));
  in.dk0 = as_stored(c, random_vector(c.kv_size(), seed + 6, 0.5f));
  in.dv0 = as_stored(c, random_vector(c.kv_size(), seed + 7, 0.5f));
  return in;
}

struct Grads {
  std::vector<float> dq, dk, dv;
};

// Runs the GPU backward on pre-filled gradients and reads them back.
Grads gpu_backward(const Case& c, const Inputs& in, const std::vector<float>& out, const std::vector<float>& lse) {
  using moe::test::upload;
  const DeviceTensor q = upload(in.q, c.q_shape(), c.dtype), k = upload(in.k, c.kv_shape(), c.dtype),
                     v = upload(in.v, c.kv_shape(), c.dtype), dout = upload(in.dout, c.q_shape(), c.dtype),
                     o = upload(out, c.q_shape(), c.dtype), l = upload(lse, c.lse_shape(), DType::kF32),
                     dq = upload(in.dq0, c.q_shape(), c.dtype), dk = upload(in.dk0, c.kv_shape(), c.dtype),
                     dv = upload(in.dv0, c.kv_shape(), c.dtype);
  moe::ops::attention_backward(dq.t, dk.t, dv.t, dout.t, q.t, k.t, v.t, o.t, l.t);
  return {moe::test::download(dq.t), moe::test::download(dk.t), moe::test::download(dv.t)};
}

void check_against_cpu(const Case& c, uint32_t seed) {
  using moe::test::check_close;
  const std::string name = c.name();
  const Inputs in = random_inputs(c, seed);

  // Forward: out and lse WRITTEN.
  std::vector<float> out_ref(c.q_size()), lse_ref(c.lse_size());
  moe::cpu::attention_forward(out_ref.data(), lse_ref.data(), in.q.data(), in.k.data(), in.v.data(), c.B, c.T, c.H, c.G,
                              c.Dh);
  {
    using moe::test::upload;
    const DeviceTensor q = upload(in.q, c.q_shape(), c.dtype), k = upload(in.k, c.kv_shape(), c.dtype),
                       v = upload(in.v, c.kv_shape(), c.dtype);
    // Garbage in the outputs: the op must overwrite every element.
    const DeviceTensor out = upload(std::vector<float>(c.q_size(), 1e4f), c.q_shape(), c.dtype);
    const DeviceTensor lse = upload(std::vector<float>(c.lse_size(), -1e4f), c.lse_shape(), DType::kF32);
    moe::ops::attention_forward(out.t, lse.t, q.t, k.t, v.t);
    check_close(moe::test::download(out.t), out_ref, rtol(c), atol(c, out_ref), name + ": out");
    check_close(moe::test::download(lse.t), lse_ref, 1e-4, c.bf16() ? 1e-3 : 1e-4, name + ": lse");
  }

  // Backward: both sides get the same out (the reference's, stored in the
  // dtype) and lse, so this checks the backward alone; dq, dk, dv are
  // WRITTEN over random pre-filled values (the CPU reference accumulates onto zeros).
  const std::vector<float> out_in = as_stored(c, out_ref);
  std::vector<float> dq_ref(in.dq0.size()), dk_ref(in.dk0.size()), dv_ref(in.dv0.size());
  moe::cpu::attention_backward(dq_ref.data(), dk_ref.data(), dv_ref.data(), in.dout.data(), in.q.data(), in.k.data(),
                               in.v.data(), out_in.data(), lse_ref.data(), c.B, c.T, c.H, c.G, c.Dh);
  const Grads got = gpu_backward(c, in, out_in, lse_ref);
  check_close(got.dq, dq_ref, rtol(c), atol(c, dq_ref), name + ": dq");
  check_close(got.dk, dk_ref, rtol(c), atol(c, dk_ref), name + ": dk");
  check_close(got.dv, dv_ref, rtol(c), atol(c, dv_ref), name + ": dv");
}

void require_gpu() { REQUIRE(moe::cuda_device_count() > 0); }

}  // namespace

TEST_CASE("GPU attention matches the CPU reference: Dh 64 and 128, T 1/37/130, G 4/2/1, F32 and BF16") {
  require_gpu();
  uint32_t seed = 100;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (int64_t Dh : {64, 128}) {
      for (int64_t T : {1, 37, 130}) {
        for (int64_t G : {4, 2, 1}) {
          check_against_cpu(Case{dtype, 2, T, 4, G, Dh}, seed);
          seed += 10;
        }
      }
    }
  }
}

TEST_CASE("GPU attention with head dims other than 64 and 128 (zero-padded kernels) matches the CPU reference") {
  require_gpu();
  uint32_t seed = 900;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (int64_t Dh : {40, 96}) {
      for (int64_t T : {37, 130}) {
        check_against_cpu(Case{dtype, 2, T, 4, 2, Dh}, seed);
        seed += 10;
      }
    }
  }
}

TEST_CASE("GPU attention backward is deterministic: the same inputs give the same bits") {
  require_gpu();
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const Case c{dtype, 2, 130, 4, 2, 128};
    const Inputs in = random_inputs(c, 7);
    std::vector<float> out(c.q_size()), lse(c.lse_size());
    moe::cpu::attention_forward(out.data(), lse.data(), in.q.data(), in.k.data(), in.v.data(), c.B, c.T, c.H, c.G,
                                c.Dh);
    out = as_stored(c, out);
    const Grads first = gpu_backward(c, in, out, lse);
    const Grads second = gpu_backward(c, in, out, lse);
    INFO(c.name());
    CHECK(first.dq == second.dq);
    CHECK(first.dk == second.dk);
    CHECK(first.dv == second.dv);
  }
}

TEST_CASE("GPU attention refuses what it does not support, naming the op and the shapes") {
  require_gpu();
  using Catch::Matchers::Contains;
  using moe::test::device_tensor;
  {
    // Head dim over 128.
    const DeviceTensor q = device_tensor({1, 8, 2, 160}, DType::kBF16), k = device_tensor({1, 8, 2, 160}, DType::kBF16),
                       v = device_tensor({1, 8, 2, 160}, DType::kBF16),
                       out = device_tensor({1, 8, 2, 160}, DType::kBF16), lse = device_tensor({1, 2, 8}, DType::kF32);
    REQUIRE_THROWS_WITH(moe::ops::attention_forward(out.t, lse.t, q.t, k.t, v.t),
                        Contains("attention_forward") && Contains("head dim 160") && Contains("[1, 8, 2, 160]"));
    REQUIRE_THROWS_WITH(moe::ops::attention_backward(q.t, k.t, v.t, out.t, q.t, k.t, v.t, out.t, lse.t),
                        Contains("attention_backward") && Contains("head dim 160"));
  }
  {
    // Mixed dtypes: k F32 with q BF16.
    const DeviceTensor q = device_tensor({1, 8, 2, 64}, DType::kBF16), k = device_tensor({1, 8, 2, 64}, DType::kF32),
                       v = device_tensor({1, 8, 2, 64}, DType::kBF16), out = device_tensor({1, 8, 2, 64}, DType::kBF16),
                       lse = device_tensor({1, 2, 8}, DType::kF32);
    REQUIRE_THROWS_WITH(moe::ops::attention_forward(out.t, lse.t, q.t, k.t, v.t),
                        Contains("attention_forward") && Contains("[1, 8, 2, 64]"));
  }
  {
    // lse of the wrong size.
    const DeviceTensor q = device_tensor({1, 8, 2, 64}, DType::kF32), k = device_tensor({1, 8, 1, 64}, DType::kF32),
                       v = device_tensor({1, 8, 1, 64}, DType::kF32), out = device_tensor({1, 8, 2, 64}, DType::kF32),
                       lse = device_tensor({1, 1, 8}, DType::kF32);
    REQUIRE_THROWS_WITH(moe::ops::attention_forward(out.t, lse.t, q.t, k.t, v.t),
                        Contains("attention_forward") && Contains("lse"));
  }
}

TEST_CASE("GPU attention_decode and RoPE at a position match the CPU, F32 and BF16") {
  REQUIRE(moe::cuda_device_count() > 0);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (const auto& [T, length, H, G, Dh] :
         std::vector<std::array<int64_t, 5>>{{16, 1, 4, 2, 64}, {40, 37, 8, 2, 128}, {64, 64, 2, 2, 32}}) {
      DYNAMIC_SECTION(moe::dtype_name(dtype) << " length " << length << " H " << H << " G " << G << " Dh " << Dh) {
        const bool bf16 = dtype == DType::kBF16;
        auto values = [&](size_t n, uint32_t seed) {
          auto v = moe::test::random_vector(n, seed);
          return bf16 ? moe::test::bf16_rounded(v) : v;
        };
        const auto q = values(static_cast<size_t>(H * Dh), 1);
        const auto k = values(static_cast<size_t>(T * G * Dh), 2), v = values(static_cast<size_t>(T * G * Dh), 3);
        std::vector<float> want(q.size());
        moe::cpu::attention_decode(want.data(), q.data(), k.data(), v.data(), length, H, G, Dh);
        const auto dq = moe::test::upload(q, {H, Dh}, dtype);
        const auto dk = moe::test::upload(k, {T, G, Dh}, dtype), dv = moe::test::upload(v, {T, G, Dh}, dtype);
        const auto dout = moe::test::device_tensor({H, Dh}, dtype);
        moe::ops::attention_decode(dout.t, dq.t, dk.t, dv.t, length);
        const auto got = moe::test::download(dout.t);
        for (size_t i = 0; i < want.size(); ++i) {
          INFO("element " << i);
          CHECK(std::abs(got[i] - want[i]) <= (bf16 ? 1e-2 : 1e-5) * (1 + std::abs(want[i])));
        }
        // RoPE of one row at position length - 1.
        std::vector<float> r = q;
        moe::cpu::rope_forward(r.data(), 1, 1, H, Dh, 10000.0f, length - 1);
        const auto dr = moe::test::upload(q, {1, 1, H, Dh}, dtype);
        moe::ops::rope_forward(dr.t, 10000.0f, length - 1);
        const auto rot = moe::test::download(dr.t);
        for (size_t i = 0; i < r.size(); ++i)
          CHECK(std::abs(rot[i] - r[i]) <= (bf16 ? 1e-2 : 1e-5) * (1 + std::abs(r[i])));
      }
    }
  }
}
