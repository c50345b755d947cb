// The GEMM family on the GPU beyond the op table's rows (tests/gpu:
// op_table_gpu_test holds matmul and the grouped GEMMs against the CPU in
// every dtype mix, over odd shapes, row views and hand-made expert
// offsets): matmul's refusals, and both GEMMs in a captured CUDA graph whose
// replays follow new device offsets; against the CPU reference
// (src/kernels/cpu/) on the same inputs:
// BF16 inputs are rounded to bf16 before the CPU sees them, so only the
// arithmetic differs. Calls go through moe::ops (the dispatch the model uses).
//
// Tolerance, per element: |got - want| <= rel_out * |want| + rel_mag * mag,
// where mag = sum_k |a_k b_k| over the element's dot product, plus |prior|
// for outputs that accumulate (dx, dw). mag is the scale of fp32 round-off in
// a sum (it bounds every partial sum), so these hold whatever the summation
// order, and elements that cancel to ~0 are not held to a relative bound.
//   kF32       f32 in, f32 out: fp32 products and sums, only the order
//              differs from OpenBLAS; rel_mag 1e-5 (K <= 256 here).
//   kBF16ToF32 bf16 in, f32 out: products exact in fp32, but tensor-core
//              accumulation is not IEEE round-to-nearest; rel_mag 1e-4.
//   kBF16Out   bf16 out: plus one bf16 rounding of the result (at most
//              2^-8 relative); rel_out 1e-2, rel_mag 1e-4.
// Outputs the op must not touch (rows outside the experts' ranges, dW of an
// expert with no rows) are checked for exact equality with their prior value.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "src/core/bf16.h"
#include "src/core/tensor.h"
#include "src/kernels/cpu/cpu_ops.h"
#include "src/kernels/cuda/cuda_check.h"
#include "src/kernels/cuda/stream.h"
#include "src/kernels/ops.h"
#include "tests/gpu/gpu_test_util.h"

namespace {

using moe::DType;
using moe::Tensor;
using moe::test::DeviceTensor;

struct Tol {
  double rel_out, rel_mag;
};
constexpr Tol kF32{0.0, 1e-5};
constexpr Tol kBF16ToF32{0.0, 1e-4};
constexpr Tol kBF16Out{1e-2, 1e-4};

Tol tol_for(DType in, DType out) {
  if (out == DType::kBF16) return kBF16Out;
  return in == DType::kBF16 ? kBF16ToF32 : kF32;
}

// Random N(0, 1) values as the device will hold them (rounded for BF16).
std::vector<float> make(size_t n, uint32_t seed, DType t) {
  std::vector<float> v = moe::test::random_vector(n, seed);
  return t == DType::kBF16 ? moe::test::bf16_rounded(v) : v;
}

// Makes sure uploads (cudaMemcpy / cudaMemset on the legacy stream) have
// landed before ops run on the backend's non-blocking stream.
void settle() { moe::cuda::check(cudaDeviceSynchronize(), "test sync"); }

void check_gemm(const std::vector<float>& got, const std::vector<float>& want, const std::vector<double>& mag, Tol tol,
                const std::string& what) {
  REQUIRE(got.size() == want.size());
  REQUIRE(mag.size() == want.size());
  size_t worst = 0;
  double worst_ratio = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(static_cast<double>(got[i]) - want[i]);
    const double allowed = tol.rel_out * std::abs(want[i]) + tol.rel_mag * mag[i];
    double ratio = allowed > 0 ? err / allowed : (err > 0 ? std::numeric_limits<double>::infinity() : 0.0);
    if (std::isnan(got[i]) || std::isnan(want[i])) ratio = std::numeric_limits<double>::infinity();
    if (ratio > worst_ratio) {
      worst_ratio = ratio;
      worst = i;
    }
  }
  if (got.empty()) return;
  INFO(what << ": worst element " << worst << " got " << got[worst] << " want " << want[worst] << " (magnitude "
            << mag[worst] << ", rel_out " << tol.rel_out << ", rel_mag " << tol.rel_mag << ", error / allowed "
            << worst_ratio << ")");
  CHECK(worst_ratio <= 1.0);
}

std::vector<double> abs_of(const std::vector<float>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = std::abs(v[i]);
  return out;
}

// ---- matmul: out = x W^T, W [O, I] -------------------------------------------------------------------------------

struct Types {
  DType in, out;
};

TEST_CASE("matmul refuses unsupported dtypes, naming the op", "[gpu][gemm][matmul]") {
  DeviceTensor x32 = moe::test::device_tensor({4, 8}, DType::kF32);
  DeviceTensor w32 = moe::test::device_tensor({6, 8}, DType::kF32);
  DeviceTensor x16 = moe::test::device_tensor({4, 8}, DType::kBF16);
  DeviceTensor w16 = moe::test::device_tensor({6, 8}, DType::kBF16);
  DeviceTensor out16 = moe::test::device_tensor({4, 6}, DType::kBF16);
  DeviceTensor out32 = moe::test::device_tensor({4, 6}, DType::kF32);
  DeviceTensor dw16 = moe::test::device_tensor({6, 8}, DType::kBF16);
  settle();
  // f32 inputs cannot write bf16 (cuBLASLt has no such kernel); inputs must share a dtype; dw is f32.
  CHECK_THROWS_WITH(moe::ops::matmul_forward(out16.t, x32.t, w32.t), Catch::Contains("matmul_forward"));
  CHECK_THROWS_WITH(moe::ops::matmul_forward(out32.t, x16.t, w32.t), Catch::Contains("matmul_forward"));
  CHECK_THROWS_WITH(moe::ops::matmul_backward(Tensor{}, dw16.t, out16.t, x16.t, w16.t),
                    Catch::Contains("matmul_backward"));
  // A shape mismatch is refused before any backend runs.
  CHECK_THROWS_WITH(moe::ops::matmul_forward(out32.t, x32.t, x32.t), Catch::Contains("matmul_forward"));
}

// ---- grouped matmul: rows [off[e], off[e+1]) times W[e], W [E, I, O] ---------------------------------------------

struct GroupedCase {
  const char* name;
  int64_t I, O, M;  // M: rows of the buffers (capacity)
  std::vector<int32_t> offsets;
};

// Reference and magnitudes of the grouped products on host vectors.
struct GroupedRef {
  std::vector<float> out, dx, dw;
  std::vector<double> mag_out, mag_dx, mag_dw;
};

GroupedRef grouped_reference(const GroupedCase& c, const std::vector<float>& x, const std::vector<float>& w,
                             const std::vector<float>& dout, const std::vector<float>& out0,
                             const std::vector<float>& dx0, const std::vector<float>& dw0) {
  const int64_t E = static_cast<int64_t>(c.offsets.size()) - 1, I = c.I, O = c.O;
  GroupedRef r{out0, dx0, dw0, std::vector<double>(out0.size(), 0.0), abs_of(dx0), abs_of(dw0)};
  moe::cpu::grouped_matmul_forward(r.out.data(), x.data(), w.data(), c.offsets.data(), E, I, O);
  moe::cpu::grouped_matmul_backward(r.dx.data(), r.dw.data(), dout.data(), x.data(), w.data(), c.offsets.data(), E, I,
                                    O);
  for (int64_t e = 0; e < E; ++e) {
    for (int64_t row = c.offsets[e]; row < c.offsets[e + 1]; ++row) {
      for (int64_t i = 0; i < I; ++i) {
        for (int64_t o = 0; o < O; ++o) {
          const double xw = std::abs(x[row * I + i]) * std::abs(w[(e * I + i) * O + o]);
          r.mag_out[row * O + o] += xw;
          r.mag_dx[row * I + i] += std::abs(dout[row * O + o]) * std::abs(w[(e * I + i) * O + o]);
          r.mag_dw[(e * I + i) * O + o] += std::abs(x[row * I + i]) * std::abs(dout[row * O + o]);
        }
      }
    }
  }
  return r;
}

// The whole point of device offsets: a step can be captured once and replayed
// with new routing. Capture (thread-local mode) fails if an op synchronises
// or copies to the host; each replay must follow the offsets it finds.
TEST_CASE("grouped matmul and matmul run in a captured CUDA graph; replays follow new device offsets",
          "[gpu][gemm][grouped_matmul][graph]") {
  const Types t{DType::kBF16, DType::kBF16};
  const int64_t E = 4, I = 100, O = 48, M = 150;
  const std::vector<std::vector<int32_t>> routings = {{0, 37, 37, 110, 140}, {0, 0, 90, 91, 150}, {3, 50, 80, 80, 80}};
  const auto x = make(M * I, 51, t.in), w = make(E * I * O, 52, t.in), dout = make(M * O, 53, t.in);
  const auto out0 = make(M * O, 54, t.out), dx0 = make(M * I, 55, t.out), dw0 = make(E * I * O, 56, DType::kF32);
  // A dense matmul in the same graph: cuBLASLt plans are made by a warm-up call, so capture only launches.
  const auto lw = make(O * I, 57, t.in);
  DeviceTensor d_x = moe::test::upload(x, {M, I}, t.in);
  DeviceTensor d_w = moe::test::upload(w, {E, I, O}, t.in);
  DeviceTensor d_dout = moe::test::upload(dout, {M, O}, t.in);
  DeviceTensor d_out = moe::test::upload(out0, {M, O}, t.out);
  DeviceTensor d_dx = moe::test::upload(dx0, {M, I}, t.out);
  DeviceTensor d_dw = moe::test::upload(dw0, {E, I, O}, DType::kF32);
  DeviceTensor d_off = moe::test::upload_i32(routings[0], {E + 1});
  DeviceTensor d_lw = moe::test::upload(lw, {O, I}, t.in);
  DeviceTensor d_lout = moe::test::device_tensor({M, O}, t.out);
  DeviceTensor d_ldw = moe::test::device_tensor({O, I}, DType::kF32);
  settle();

  auto step = [&] {
    moe::ops::grouped_matmul_forward(d_out.t, d_x.t, d_w.t, d_off.t);
    moe::ops::grouped_matmul_backward(d_dx.t, d_dw.t, d_dout.t, d_x.t, d_w.t, d_off.t);
    moe::ops::matmul_forward(d_lout.t, d_x.t, d_lw.t);
    moe::ops::matmul_backward(Tensor{}, d_ldw.t, d_dout.t, d_x.t, d_lw.t);
  };
  step();  // warm-up: kernels loaded, cuBLASLt plans cached
  moe::cuda::check(cudaStreamSynchronize(moe::cuda::stream()), "warm-up");

  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  moe::cuda::check(cudaStreamBeginCapture(moe::cuda::stream(), cudaStreamCaptureModeThreadLocal), "begin capture");
  step();
  moe::cuda::check(cudaStreamEndCapture(moe::cuda::stream(), &graph), "end capture");
  moe::cuda::check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");

  for (const auto& off : routings) {
    const GroupedCase c{"graph replay", I, O, M, off};
    INFO("routing offsets " << off[0] << " " << off[1] << " " << off[2] << " " << off[3] << " " << off[4]);
    // Reset the outputs and write the new routing on the device, then replay.
    moe::cuda::check(cudaMemcpy(d_off.t.data, off.data(), off.size() * 4, cudaMemcpyHostToDevice), "offsets");
    DeviceTensor fresh_out = moe::test::upload(out0, {M, O}, t.out);
    DeviceTensor fresh_dx = moe::test::upload(dx0, {M, I}, t.out);
    DeviceTensor fresh_dw = moe::test::upload(dw0, {E, I, O}, DType::kF32);
    moe::cuda::check(cudaMemcpy(d_out.t.data, fresh_out.t.data, d_out.t.bytes(), cudaMemcpyDeviceToDevice), "reset");
    moe::cuda::check(cudaMemcpy(d_dx.t.data, fresh_dx.t.data, d_dx.t.bytes(), cudaMemcpyDeviceToDevice), "reset");
    moe::cuda::check(cudaMemcpy(d_dw.t.data, fresh_dw.t.data, d_dw.t.bytes(), cudaMemcpyDeviceToDevice), "reset");
    moe::cuda::check(cudaMemset(d_ldw.t.data, 0, d_ldw.t.bytes()), "reset");
    settle();
    moe::cuda::check(cudaGraphLaunch(exec, moe::cuda::stream()), "graph launch");
    const auto got_out = moe::test::download(d_out.t);
    const auto got_dx = moe::test::download(d_dx.t);
    const auto got_dw = moe::test::download(d_dw.t);
    const auto got_lout = moe::test::download(d_lout.t);
    const auto got_ldw = moe::test::download(d_ldw.t);

    const GroupedRef ref = grouped_reference(c, x, w, dout, out0, dx0, dw0);
    check_gemm(got_out, ref.out, ref.mag_out, tol_for(t.in, t.out), "graph: grouped out");
    check_gemm(got_dx, ref.dx, ref.mag_dx, tol_for(t.in, t.out), "graph: grouped dx");
    check_gemm(got_dw, ref.dw, ref.mag_dw, tol_for(t.in, DType::kF32), "graph: grouped dW");

    std::vector<float> want_lout(M * O, 0.0f), want_ldw(O * I, 0.0f);
    moe::cpu::matmul_forward(want_lout.data(), x.data(), lw.data(), M, I, O);
    moe::cpu::matmul_backward(nullptr, want_ldw.data(), dout.data(), x.data(), lw.data(), M, I, O);
    std::vector<double> mag_lout(M * O, 0.0), mag_ldw(O * I, 0.0);
    for (int64_t n = 0; n < M; ++n)
      for (int64_t o = 0; o < O; ++o)
        for (int64_t i = 0; i < I; ++i) {
          mag_lout[n * O + o] += std::abs(x[n * I + i]) * std::abs(lw[o * I + i]);
          mag_ldw[o * I + i] += std::abs(dout[n * O + o]) * std::abs(x[n * I + i]);
        }
    check_gemm(got_lout, want_lout, mag_lout, tol_for(t.in, t.out), "graph: matmul out");
    check_gemm(got_ldw, want_ldw, mag_ldw, tol_for(t.in, DType::kF32), "graph: matmul dw");
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

}  // namespace
