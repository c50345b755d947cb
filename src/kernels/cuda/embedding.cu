// Token embedding lookup and its gradient on the GPU.
// Legend: N tokens, D model dim, V vocab.
// Dtypes: out_ND F32 or BF16; table_VD F32 or BF16; dtable_VD F32; dout_ND F32
// or BF16; tokens_N I32.
#include <cmath>
#include <string>

#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/dense_util.cuh"

namespace moe::cuda {
namespace {

using namespace dense;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Token ids each block compares per pass of the backward's scan (kThreads x 8).
constexpr int kScanPerThread = 8;

// One block per token row. A token id outside [0, V) is a bug upstream (the
// CPU reference would read out of bounds); here its row is filled with NaN so
// the loss shows it, and nothing outside the table is read.
template <typename TO, typename TT>
__global__ void embedding_forward_kernel(TO* out_ND, const int32_t* tokens_N, const TT* table_VD, int64_t V,
                                         int64_t D) {
  const int64_t n = blockIdx.x;
  const int32_t token = tokens_N[n];
  TO* out_D = out_ND + n * D;
  if (token < 0 || token >= V) {
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) out_D[d] = from_f32<TO>(NAN);
    return;
  }
  const TT* row_D = table_VD + static_cast<int64_t>(token) * D;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) out_D[d] = from_f32<TO>(to_f32(row_D[d]));
}

// Deterministic, without atomics or scratch: one block per position n. The
// block of the FIRST position holding token t (the "leader") adds the dout rows
// of every position holding t into dtable[t], in ascending position order;
// blocks of later positions holding t see the earlier one and return. Each
// table row thus has one writer, and the adds happen in the CPU reference's
// order (dtable[t][d] += dout[n][d] for n ascending, one fp32 add each), so
// the result is reproducible run to run and expected to equal the CPU's.
// Cost: every leader scans all N token ids (O(N^2) id compares in total, read
// through L1/L2) besides the O(N*D) row traffic.
template <typename TG>
__global__ void __launch_bounds__(kThreads)
    embedding_backward_kernel(float* dtable_VD, const TG* dout_ND, const int32_t* tokens_N, int64_t N, int64_t V,
                              int64_t D) {
  __shared__ int32_t matches[kThreads];  // chunk-relative positions holding t, ascending
  __shared__ int warp_counts[kWarps];
  const int64_t n = blockIdx.x;
  const int32_t t = tokens_N[n];
  if (t < 0 || t >= V) return;  // out-of-range id (forward wrote NaN): no row to add to
  float* drow_D = dtable_VD + static_cast<int64_t>(t) * D;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;

  constexpr int64_t kPass = static_cast<int64_t>(kThreads) * kScanPerThread;
  for (int64_t base = 0; base < N; base += kPass) {
    // 1. Cheap scan of kPass ids: is there an earlier position with t (then
    //    we are not the leader), and any position >= n with t in this pass?
    int before = 0, after = 0;
#pragma unroll
    for (int j = 0; j < kScanPerThread; ++j) {
      const int64_t i = base + static_cast<int64_t>(j) * kThreads + threadIdx.x;
      if (i < N && tokens_N[i] == t) {
        before |= i < n;
        after |= i >= n;
      }
    }
    if (__syncthreads_or(before)) return;  // uniform: every thread returns
    if (!__syncthreads_or(after)) continue;

    // 2. This pass holds matches: per sub-chunk of kThreads ids, list them in
    //    ascending order (ballot + warp prefix) and add their dout rows.
    for (int j = 0; j < kScanPerThread; ++j) {
      const int64_t chunk = base + static_cast<int64_t>(j) * kThreads;
      if (chunk >= N) break;  // uniform
      const int64_t i = chunk + threadIdx.x;
      const bool take = i < N && i >= n && tokens_N[i] == t;
      const unsigned ballot = __ballot_sync(0xffffffffu, take);
      if (lane == 0) warp_counts[warp] = __popc(ballot);
      __syncthreads();
      int offset = 0, total = 0;
      for (int w = 0; w < kWarps; ++w) {
        offset += w < warp ? warp_counts[w] : 0;
        total += warp_counts[w];
      }
      if (take) matches[offset + __popc(ballot & ((1u << lane) - 1u))] = threadIdx.x;
      __syncthreads();
      if (total > 0) {
        for (int64_t d = threadIdx.x; d < D; d += kThreads) {
          float acc = drow_D[d];
          for (int k = 0; k < total; ++k) acc += to_f32(dout_ND[(chunk + matches[k]) * D + d]);
          drow_D[d] = acc;
        }
      }
      __syncthreads();  // matches and warp_counts are rewritten by the next sub-chunk
    }
  }
}

}  // namespace

void embedding_forward(const Tensor& out_ND, const Tensor& tokens_N, const Tensor& table_VD) {
  const char* op = "embedding_forward";
  require_dtypes(is_float_type(out_ND.dtype) && tokens_N.dtype == DType::kI32 && is_float_type(table_VD.dtype), op,
                 {{"out", out_ND}, {"tokens", tokens_N}, {"table", table_VD}},
                 "out f32|bf16, tokens i32, table f32|bf16");
  const int64_t N = tokens_N.numel();
  const int64_t D = table_VD.ndim ? table_VD.size(-1) : 0;
  require_shapes(D > 0 && out_ND.numel() == N * D && table_VD.numel() % D == 0, op,
                 "out must be [N, D] for N tokens and a [V, D] table",
                 {{"out", out_ND}, {"tokens", tokens_N}, {"table", table_VD}});
  if (N == 0) return;
  require_grid_rows(N, op, {{"out", out_ND}, {"tokens", tokens_N}, {"table", table_VD}});
  const int64_t V = table_VD.numel() / D;
  with_float_type(out_ND.dtype, [&](auto out_tag) {
    with_float_type(table_VD.dtype, [&](auto table_tag) {
      using TO = typename decltype(out_tag)::type;
      using TT = typename decltype(table_tag)::type;
      embedding_forward_kernel<TO, TT><<<static_cast<unsigned>(N), kThreads, 0, stream()>>>(
          static_cast<TO*>(out_ND.data), tokens_N.i32(), static_cast<const TT*>(table_VD.data), V, D);
    });
  });
  check_launch(op, {{"out", out_ND}, {"tokens", tokens_N}, {"table", table_VD}});
}

void embedding_backward(const Tensor& dtable_VD, const Tensor& dout_ND, const Tensor& tokens_N) {
  const char* op = "embedding_backward";
  require_dtypes(dtable_VD.dtype == DType::kF32 && is_float_type(dout_ND.dtype) && tokens_N.dtype == DType::kI32, op,
                 {{"dtable", dtable_VD}, {"dout", dout_ND}, {"tokens", tokens_N}},
                 "dtable f32, dout f32|bf16, tokens i32");
  const int64_t N = tokens_N.numel();
  const int64_t D = dtable_VD.ndim ? dtable_VD.size(-1) : 0;
  require_shapes(D > 0 && dout_ND.numel() == N * D && dtable_VD.numel() % D == 0, op,
                 "dout must be [N, D] for N tokens and a [V, D] table",
                 {{"dtable", dtable_VD}, {"dout", dout_ND}, {"tokens", tokens_N}});
  if (N == 0) return;
  require_grid_rows(N, op, {{"dtable", dtable_VD}, {"dout", dout_ND}, {"tokens", tokens_N}});
  const int64_t V = dtable_VD.numel() / D;
  with_float_type(dout_ND.dtype, [&](auto tag) {
    using TG = typename decltype(tag)::type;
    embedding_backward_kernel<TG><<<static_cast<unsigned>(N), kThreads, 0, stream()>>>(
        dtable_VD.f32(), static_cast<const TG*>(dout_ND.data), tokens_N.i32(), N, V, D);
  });
  check_launch(op, {{"dtable", dtable_VD}, {"dout", dout_ND}, {"tokens", tokens_N}});
}

}  // namespace moe::cuda
