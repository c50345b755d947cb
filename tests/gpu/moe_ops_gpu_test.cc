// What the MoE dispatch promises on the GPU beyond the op table's rows
// (tests/gpu:op_table_gpu_test holds the routers, the aux losses, the plan
// under skewed routing at every capacity, the counts, permute/unpermute and
// their backwards against the CPU): permute then unpermute with unit
// weights is the identity, exactly.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/ops.h"
#include "tests/gpu/gpu_test_util.h"

using moe::DType;
using moe::Tensor;
using moe::test::bf16_rounded;
using moe::test::check_close;
using moe::test::device_tensor;
using moe::test::DeviceTensor;
using moe::test::download;
using moe::test::random_vector;
using moe::test::upload;
using moe::test::upload_i32;
namespace ops = moe::ops;

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

void check_bitwise(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  check_close(got, want, 0.0, 0.0, what);
}

const char* name_of(DType t) { return t == DType::kBF16 ? "bf16" : "f32"; }

// What the CPU reference sees of an upload: bf16 uploads are rounded.
std::vector<float> as_uploaded(const std::vector<float>& v, DType t) { return t == DType::kBF16 ? bf16_rounded(v) : v; }

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

}  // namespace

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
