// What the MoE dispatch promises on the GPU beyond the op table's rows
// (tests/gpu:op_table_gpu_test holds the routers, the aux losses,
// permute/unpermute and their backwards against the CPU): the plan under
// skewed choices and every capacity, over many chunks of pairs, of the
// router's own choices and of no tokens; the expert counts accumulated
// over micro-batches; and permute then unpermute as the identity. Integers
// must match exactly.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "src/kernels/cpu/cpu_ops.h"
#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/ops.h"
#include "tests/gpu/gpu_test_util.h"

using moe::DType;
using moe::Tensor;
using moe::cpu::RouterKind;
using moe::test::bf16_rounded;
using moe::test::check_close;
using moe::test::device_tensor;
using moe::test::DeviceTensor;
using moe::test::download;
using moe::test::random_vector;
using moe::test::upload;
using moe::test::upload_i32;
namespace ops = moe::ops;
namespace cpu = moe::cpu;

namespace {

// The helpers of gpu_test_util.h fill buffers with cudaMemset / cudaMemcpy on
// the legacy default stream, which the backend's non-blocking stream does not
// wait for (and a pageable cudaMemcpy may return before its DMA lands): settle
// the device before an op reads what was uploaded.
void settle() { moe::cuda::check(cudaDeviceSynchronize(), "test settle"); }

std::vector<int32_t> download_i32(const Tensor& t) {
  moe::cuda::check(cudaStreamSynchronize(moe::cuda::stream()), "test sync");
  std::vector<int32_t> out(static_cast<size_t>(t.numel()));
  moe::cuda::check(cudaMemcpy(out.data(), t.data, out.size() * 4, cudaMemcpyDeviceToHost), "test download");
  return out;
}

void check_equal(const std::vector<int32_t>& got, const std::vector<int32_t>& want, const std::string& what) {
  REQUIRE(got.size() == want.size());
  const auto diff = std::mismatch(got.begin(), got.end(), want.begin());
  const size_t at = static_cast<size_t>(diff.first - got.begin());
  INFO(what << ": first difference at " << at << " of " << got.size()
            << (at < got.size() ? ": got " + std::to_string(got[at]) + ", want " + std::to_string(want[at]) : ""));
  CHECK(at == got.size());
}

void check_bitwise(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  check_close(got, want, 0.0, 0.0, what);
}

const char* name_of(DType t) { return t == DType::kBF16 ? "bf16" : "f32"; }

// What the CPU reference sees of an upload: bf16 uploads are rounded.
std::vector<float> as_uploaded(const std::vector<float>& v, DType t) { return t == DType::kBF16 ? bf16_rounded(v) : v; }

// ---- routing inputs --------------------------------------------------------

struct Routed {
  std::vector<int32_t> idx_NK;
  std::vector<float> w_NK, scores_NE;
};

Routed cpu_route(const std::vector<float>& logits, const float* bias, int64_t N, int64_t E, int64_t K,
                 RouterKind kind) {
  Routed r{std::vector<int32_t>(N * K), std::vector<float>(N * K), std::vector<float>(N * E)};
  cpu::router_forward(r.idx_NK.data(), r.w_NK.data(), r.scores_NE.data(), logits.data(), bias, N, E, K, kind);
  return r;
}

// Each token picks K distinct experts; with `skew`, expert 0 is among them
// for about that share of the tokens (to overflow its capacity).
std::vector<int32_t> random_choices(int64_t N, int64_t E, int64_t K, uint64_t seed, double skew = 0) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> coin(0, 1);
  std::vector<int32_t> experts(E), idx_NK;
  std::iota(experts.begin(), experts.end(), 0);
  for (int64_t n = 0; n < N; ++n) {
    std::shuffle(experts.begin(), experts.end(), gen);
    if (coin(gen) < skew) std::swap(experts[0], *std::find(experts.begin(), experts.end(), 0));
    idx_NK.insert(idx_NK.end(), experts.begin(), experts.begin() + K);
  }
  return idx_NK;
}

struct HostPlan {
  std::vector<int32_t> offsets_E1, row_pair_M, pair_row_NK;
  int64_t M = 0, dropped = 0;
};

HostPlan cpu_plan(const std::vector<int32_t>& idx_NK, int64_t N, int64_t E, int64_t K, int64_t capacity) {
  HostPlan p{std::vector<int32_t>(E + 1), std::vector<int32_t>(N * K), std::vector<int32_t>(N * K)};
  p.dropped =
      cpu::moe_plan(p.offsets_E1.data(), p.row_pair_M.data(), p.pair_row_NK.data(), idx_NK.data(), N, E, K, capacity);
  p.M = p.offsets_E1[E];
  p.row_pair_M.resize(p.M);
  return p;
}

struct DevicePlan {
  DeviceTensor offsets_E1, row_pair_M, pair_row_NK;
  int64_t M = 0;  // offsets_E1[E], read back by the test
};

// The plan on the GPU, buffers shaped as the MoE layer shapes them; row_pair
// starts as garbage (the GPU uses it as scratch, the CPU never reads it).
DevicePlan gpu_plan(const std::vector<int32_t>& idx_NK, int64_t N, int64_t E, int64_t K, int64_t capacity) {
  DevicePlan d{upload_i32(std::vector<int32_t>(E + 1, -7), {E + 1}),
               upload_i32(std::vector<int32_t>(N * K, -7), {N * K}),
               upload_i32(std::vector<int32_t>(N * K, -7), {N, K}), 0};
  const DeviceTensor idx = upload_i32(idx_NK, {N, K});
  settle();
  ops::moe_plan(d.offsets_E1.t, d.row_pair_M.t, d.pair_row_NK.t, idx.t, capacity);
  d.M = download_i32(d.offsets_E1.t).back();
  return d;
}

void check_plan(const DevicePlan& got, const HostPlan& want, const std::string& what) {
  INFO(what);
  CHECK(got.M == want.M);
  check_equal(download_i32(got.offsets_E1.t), want.offsets_E1, "offsets_E1");
  std::vector<int32_t> row_pair = download_i32(got.row_pair_M.t);
  row_pair.resize(static_cast<size_t>(std::max<int64_t>(0, std::min<int64_t>(got.M, row_pair.size()))));
  check_equal(row_pair, want.row_pair_M, "row_pair_M (first M)");
  check_equal(download_i32(got.pair_row_NK.t), want.pair_row_NK, "pair_row_NK");
}

}  // namespace

// ---- moe_plan -------------------------------------------------------------------

TEST_CASE("GPU moe_plan is identical to the CPU's, with and without capacity drops", "[gpu][dispatch]") {
  struct Case {
    int64_t N, E, K;
    double skew;
    std::vector<int64_t> capacities;
  };
  // N*K < 1024 pairs is one chunk; the larger cases split the pairs over 10 to
  // 12 warps, so the cross-chunk bases and the scratch in row_pair_M are used.
  const std::vector<Case> cases = {
      {37, 8, 2, 0.0, {0, 5, 9, 74, 1000}},  // 74 pairs over 8 experts: 5 drops some, 74 none
      {37, 8, 2, 0.9, {0, 3, 20}},           // expert 0 in ~90% of the tokens
      {1, 8, 2, 0.0, {0, 1}},                // fewer pairs than experts
      {5000, 8, 2, 0.0, {0, 1100, 1250}},    // 10 chunks
      {3000, 64, 4, 0.5, {0, 188, 1}},       // 12 chunks, capacity 1 keeps one pair per expert
      {700, 2048, 32, 0.0, {0, 10}},         // the largest E and K: 22400 pairs, 11 chunks
  };
  for (const Case& c : cases) {
    const std::vector<int32_t> idx = random_choices(c.N, c.E, c.K, 400 + c.N + c.E, c.skew);
    for (int64_t capacity : c.capacities) {
      const std::string what = "N = " + std::to_string(c.N) + ", E = " + std::to_string(c.E) +
                               ", K = " + std::to_string(c.K) + ", skew " + std::to_string(c.skew) + ", capacity " +
                               std::to_string(capacity);
      const HostPlan want = cpu_plan(idx, c.N, c.E, c.K, capacity);
      check_plan(gpu_plan(idx, c.N, c.E, c.K, capacity), want, what);
    }
  }
}

TEST_CASE("GPU moe_count_experts equals the CPU's counts and accumulates", "[gpu][dispatch]") {
  struct Case {
    int64_t N, E, K;
    double skew;
    int64_t capacity;
  };
  // Up to 22400 pairs (many blocks adding to the same experts) and E = 2048.
  for (const Case& c : std::vector<Case>{{37, 8, 2, 0.0, 5}, {5000, 8, 2, 0.9, 0}, {700, 2048, 32, 0.0, 10}}) {
    const std::vector<int32_t> idx = random_choices(c.N, c.E, c.K, 450 + c.N, c.skew);
    const HostPlan want_plan = cpu_plan(idx, c.N, c.E, c.K, c.capacity);
    std::vector<int32_t> routed(c.E, 0), kept(c.E, 0);
    const DeviceTensor d_idx = upload_i32(idx, {c.N, c.K});
    const DeviceTensor d_offsets = upload_i32(want_plan.offsets_E1, {c.E + 1});
    const DeviceTensor d_routed = upload_i32(routed, {c.E}), d_kept = upload_i32(kept, {c.E});
    settle();
    for (int micro = 0; micro < 2; ++micro) {
      cpu::moe_count_experts(routed.data(), kept.data(), idx.data(), c.N * c.K, want_plan.offsets_E1.data(), c.E);
      ops::moe_count_experts(d_routed.t, d_kept.t, d_idx.t, d_offsets.t);
    }
    INFO("N = " << c.N << ", E = " << c.E << ", K = " << c.K);
    check_equal(download_i32(d_routed.t), routed, "routed counts");
    check_equal(download_i32(d_kept.t), kept, "kept counts");
  }
}

TEST_CASE("GPU moe_plan of the router's own choices, and of no tokens", "[gpu][dispatch]") {
  const int64_t N = 37, E = 8, K = 2;
  const Routed r = cpu_route(random_vector(N * E, 410), nullptr, N, E, K, RouterKind::kSoftmaxTopK);
  for (int64_t capacity : {0, 4}) {
    check_plan(gpu_plan(r.idx_NK, N, E, K, capacity), cpu_plan(r.idx_NK, N, E, K, capacity),
               "routed, capacity " + std::to_string(capacity));
  }
  const DevicePlan empty = gpu_plan({}, 0, E, K, 0);
  CHECK(empty.M == 0);
  check_equal(download_i32(empty.offsets_E1.t), std::vector<int32_t>(E + 1, 0), "offsets_E1 of no tokens");
}

// ---- permute / unpermute ----------------------------------------------------------

TEST_CASE("GPU permute then unpermute with unit weights is the identity", "[gpu][dispatch]") {
  // K = 1, w = 1: out = 0 + 1 * x. K = 2, w = 0.5 each: out = 0.5 x + 0.5 x.
  // Both are exact in fp32 and, from bf16 inputs, in bf16 again.
  for (int64_t K : {1, 2}) {
    for (int64_t D : {64, 30}) {
      for (DType t : {DType::kF32, DType::kBF16}) {
        const int64_t N = 37, E = 8;
        INFO("K = " << K << ", D = " << D << ", " << name_of(t));
        const std::vector<int32_t> idx = random_choices(N, E, K, 600 + K + D);
        const DevicePlan p = gpu_plan(idx, N, E, K, 0);
        REQUIRE(p.M == N * K);
        const std::vector<float> x = as_uploaded(random_vector(N * D, 601), t);
        const DeviceTensor d_x = upload(x, {N, D}, t);
        const DeviceTensor d_w = upload(std::vector<float>(N * K, K == 1 ? 1.0f : 0.5f), {N, K}, DType::kF32);
        DeviceTensor d_xs = device_tensor({N * K, D}, t);
        DeviceTensor d_out = device_tensor({N, D}, t);  // zeros
        settle();
        const Tensor xs = d_xs.t;
        ops::moe_permute(xs, d_x.t, p.pair_row_NK.t);
        const std::vector<float> moved = download(xs);
        CHECK(std::vector<float>(moved.begin(), moved.begin() + N * D) != x);  // the rows really moved
        ops::moe_unpermute(d_out.t, xs, d_w.t, p.pair_row_NK.t);
        check_bitwise(download(d_out.t), x, "unpermute(permute(x))");
      }
    }
  }
}
