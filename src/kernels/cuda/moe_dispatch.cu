// Dispatch on the GPU: the plan that sorts (token, slot) pairs by expert with
// capacity, and the gathers that move rows between token order and expert
// order. Layouts and contracts: src/kernels/cpu/moe_dispatch.cc and cpu_ops.h.
// Legend: N tokens, K slots per token, E experts, P = N*K pairs, D row width,
// M kept rows, C pair chunks (one warp each) of L pairs.
//
// The plan is a stable counting sort in five small kernels, with no scratch
// beyond its outputs:
//   1. count:   warp c counts the pairs of its chunk per expert (shared
//               memory); chunk 0's counts go to offsets[1..E], chunk c >= 1's
//               to row_pair_M[e * (C-1) + c-1] (scratch until step 5 writes it;
//               C is capped so that (C-1) * E <= P fits);
//   2. scan:    block e turns its row of chunk counts into exclusive bases
//               (the rank of chunk c's first pair of e among all pairs of e),
//               and leaves the total of e in offsets[e+1];
//   3. offsets: one block: kept_e = min(total_e, capacity), offsets = exclusive
//               prefix sums of kept_e;
//   4. rank:    warp c walks its chunk again, 32 pairs at a time; lanes with
//               the same expert find each other (__match_any_sync), so the
//               pair's rank among all pairs of its expert, in pair order, is
//               base + earlier matches. Kept if rank < capacity: row =
//               offsets[e] + rank, else -1 -> pair_row_NK;
//   5. scatter: row_pair[pair_row[p]] = p for kept pairs.
// Pair order is token order (a token picks an expert once), as on the CPU, so
// the rows, and which pairs overflow, are identical to the CPU's.
//
// With a priority, a step 0 chooses the kept pairs first: block e finds the
// capacity-th highest priority among e's pairs by a radix selection on
// ordered_bits (4 passes of 8 bits over the pairs, a 256-bin histogram in
// shared memory), keeps the pairs above it and, of those equal to it, the
// earliest (a block scan in pair order), and marks pair_row 0 (kept) or -1.
// Steps 1 and 4 then count and rank only the kept pairs, with no capacity.
#include <cub/block/block_scan.cuh>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "src/core/float_order.h"
#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/moe_common.cuh"
#include "src/kernels/cuda/stream.h"

namespace moe::cuda {
namespace {

using namespace moe_detail;

constexpr int kPlanWarps = 4;             // warps per block in the count and rank kernels
constexpr int64_t kMinChunkPairs = 1024;  // pairs per warp, at least (but for the last chunk)
constexpr int kScanThreads = 256;
constexpr int kOffsetThreads = 1024;   // 2 experts per thread: E <= 2048
constexpr int kRowThreads = 256;       // permute / unpermute: one block per row or token
constexpr int kPriorityThreads = 512;  // step 0: one block per expert

// ---- the plan ------------------------------------------------------------------

// Steps 1 and 4 share the walk over a chunk; kRank selects step 4.
template <bool kRank>
__global__ void plan_walk_kernel(int32_t* offsets_E1, int32_t* chunk_counts, int32_t* pair_row_P,
                                 const int32_t* topk_idx_P, int64_t P, int E, int64_t C, int64_t L, int capacity,
                                 bool by_priority) {
  extern __shared__ int32_t counters[];
  const int lane = threadIdx.x & 31;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kPlanWarps + (threadIdx.x >> 5);
  if (c >= C) return;  // the whole warp leaves together; no block-wide barriers below
  int32_t* cnt_E = counters + (threadIdx.x >> 5) * E;
  // chunk_counts holds expert-major rows: e * (C-1) + (c-1) for chunks c >= 1.
  for (int e = lane; e < E; e += 32) cnt_E[e] = !kRank || c == 0 ? 0 : chunk_counts[e * (C - 1) + (c - 1)];
  __syncwarp();

  const int64_t begin = c * L, end = begin + L < P ? begin + L : P;
  const unsigned lanes_before = (1u << lane) - 1;
  for (int64_t first = begin; first < end; first += 32) {
    const int64_t p = first + lane;
    int key = -1;  // -1: past the chunk, or not an expert id (never counted, never routed)
    if (p < end) {
      const int32_t e = topk_idx_P[p];
      // Step 0's choice: pair_row < 0 is dropped (read before this lane writes it).
      if (e >= 0 && e < E && !(by_priority && pair_row_P[p] < 0)) key = e;
    }
    const unsigned peers = __match_any_sync(kFullMask, key);
    const int leader = __ffs(peers) - 1;
    int32_t base = 0;
    if (key >= 0 && lane == leader) {
      base = cnt_E[key];
      cnt_E[key] = base + __popc(peers);
    }
    if (kRank) {
      base = __shfl_sync(kFullMask, base, leader);
      if (p < end) {
        const int32_t rank = base + __popc(peers & lanes_before);
        pair_row_P[p] = key >= 0 && (capacity <= 0 || rank < capacity) ? offsets_E1[key] + rank : -1;
      }
    }
    __syncwarp();  // the next round's leaders may be other lanes
  }
  if (!kRank) {
    for (int e = lane; e < E; e += 32) {
      if (c == 0) {
        offsets_E1[e + 1] = cnt_E[e];
      } else {
        chunk_counts[e * (C - 1) + (c - 1)] = cnt_E[e];
      }
    }
  }
}

// Step 0 (with a priority): block e marks pair_row[p] = 0 for the `capacity`
// pairs of e with the highest ordered_bits(priority) (ties: the lower p), -1
// for its other pairs; pairs of other experts are left to their blocks.
__global__ void __launch_bounds__(kPriorityThreads)
    plan_priority_kernel(int32_t* pair_row_P, const int32_t* topk_idx_P, const float* priority_P, int64_t P,
                         int capacity) {
  using Scan = cub::BlockScan<int32_t, kPriorityThreads>;
  __shared__ typename Scan::TempStorage temp;
  __shared__ int32_t histogram[256];
  __shared__ int32_t pairs_of_e, take;  // take: how many of the pairs matching `prefix` are still to keep
  __shared__ uint32_t prefix;
  const int e = blockIdx.x;
  if (threadIdx.x == 0) pairs_of_e = 0;
  __syncthreads();
  int32_t mine = 0;
  for (int64_t p = threadIdx.x; p < P; p += kPriorityThreads) mine += topk_idx_P[p] == e;
  atomicAdd(&pairs_of_e, mine);
  __syncthreads();
  if (pairs_of_e <= capacity) {  // every pair of e is kept
    for (int64_t p = threadIdx.x; p < P; p += kPriorityThreads)
      if (topk_idx_P[p] == e) pair_row_P[p] = 0;
    return;  // the condition is the same for the whole block
  }
  if (threadIdx.x == 0) {
    take = capacity;
    prefix = 0;
  }
  // Radix passes, most significant byte first: after the pass at `shift`,
  // the threshold's bytes above and at shift are in prefix, and take counts
  // the pairs to keep among those whose key equals prefix in those bytes.
  for (int shift = 24; shift >= 0; shift -= 8) {
    const uint32_t high_mask = shift == 24 ? 0u : ~0u << (shift + 8);
    for (int b = threadIdx.x; b < 256; b += kPriorityThreads) histogram[b] = 0;
    __syncthreads();
    for (int64_t p = threadIdx.x; p < P; p += kPriorityThreads) {
      if (topk_idx_P[p] != e) continue;
      const uint32_t key = ordered_bits(priority_P[p]);
      if ((key & high_mask) == prefix) atomicAdd(&histogram[(key >> shift) & 255u], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int32_t above = 0;
      int b = 255;
      while (above + histogram[b] < take) above += histogram[b--];  // stops: the bins hold >= take pairs
      take -= above;
      prefix |= static_cast<uint32_t>(b) << shift;
    }
    __syncthreads();
  }
  // prefix is the threshold key: keep the pairs above it, and the first
  // `take` pairs equal to it in pair order.
  int32_t equal_before = 0;
  for (int64_t first = 0; first < P; first += kPriorityThreads) {
    const int64_t p = first + threadIdx.x;
    const bool of_e = p < P && topk_idx_P[p] == e;
    const uint32_t key = of_e ? ordered_bits(priority_P[p]) : 0u;
    const int32_t equal = of_e && key == prefix;
    int32_t rank = 0, tile_equal = 0;
    Scan(temp).ExclusiveSum(equal, rank, tile_equal);
    if (of_e) pair_row_P[p] = key > prefix || (equal && equal_before + rank < take) ? 0 : -1;
    equal_before += tile_equal;
    __syncthreads();  // temp is reused by the next tile
  }
}

// Step 2: block e scans chunk_counts[e][0 .. C-2] (chunks 1 .. C-1), starting
// from chunk 0's count in offsets[e+1], and writes the total back there.
__global__ void plan_scan_kernel(int32_t* offsets_E1, int32_t* chunk_counts, int64_t C) {
  using Scan = cub::BlockScan<int32_t, kScanThreads>;
  __shared__ typename Scan::TempStorage temp;
  const int e = blockIdx.x;
  int32_t* row = chunk_counts + e * (C - 1);
  int32_t running = offsets_E1[e + 1];
  for (int64_t first = 0; first < C - 1; first += kScanThreads) {
    const int64_t i = first + threadIdx.x;
    const int32_t count = i < C - 1 ? row[i] : 0;
    int32_t before = 0, tile_total = 0;
    Scan(temp).ExclusiveSum(count, before, tile_total);
    if (i < C - 1) row[i] = running + before;
    running += tile_total;
    __syncthreads();  // temp is reused by the next tile
  }
  if (threadIdx.x == 0) offsets_E1[e + 1] = running;
}

// Step 3 (one block): thread t holds experts 2t and 2t+1.
// The launch bounds keep the kernel within a block's registers at 1024 threads.
__global__ void __launch_bounds__(kOffsetThreads) plan_offsets_kernel(int32_t* offsets_E1, int E, int capacity) {
  using Scan = cub::BlockScan<int32_t, kOffsetThreads>;
  __shared__ typename Scan::TempStorage temp;
  const int e0 = 2 * threadIdx.x, e1 = e0 + 1;
  auto kept = [capacity](int32_t total) { return capacity > 0 && total > capacity ? capacity : total; };
  const int32_t k0 = e0 < E ? kept(offsets_E1[e0 + 1]) : 0;
  const int32_t k1 = e1 < E ? kept(offsets_E1[e1 + 1]) : 0;
  __syncthreads();  // every total is read before any offset overwrites it
  int32_t before = 0, total = 0;
  Scan(temp).ExclusiveSum(k0 + k1, before, total);
  if (e0 < E) offsets_E1[e0] = before;
  if (e1 < E) offsets_E1[e1] = before + k0;
  if (threadIdx.x == 0) offsets_E1[E] = total;
}

// Step 5.
__global__ void plan_scatter_kernel(int32_t* row_pair_M, const int32_t* pair_row_P, int64_t P) {
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= P) return;
  const int32_t row = pair_row_P[p];
  if (row >= 0) row_pair_M[row] = static_cast<int32_t>(p);
}

// ---- permute / unpermute ---------------------------------------------------------

// Block i copies row index[i] of src to row i of dst, in words of W bytes.
template <typename W>
__global__ void gather_rows_kernel(W* dst, const W* src, const int32_t* index, int64_t rows, int64_t words) {
  const int64_t i = blockIdx.x;
  const int64_t from = index[i];
  if (from < 0 || from >= rows) return;
  for (int64_t w = threadIdx.x; w < words; w += blockDim.x) dst[i * words + w] = src[from * words + w];
}

// Loads the K rows of token n (pair_row) into shared memory, sorted ascending,
// dropped pairs (-1) and rows outside [0, M) left out; returns how many.
// Thread 0 sorts (K <= 32, insertion); contains __syncthreads.
__device__ int sorted_rows_of_token(int32_t* rows_K, const int32_t* pair_row_NK, int64_t n, int K, int64_t M) {
  __shared__ int count;
  if (threadIdx.x == 0) {
    int filled = 0;
    for (int k = 0; k < K; ++k) {
      const int32_t row = pair_row_NK[n * K + k];
      if (row < 0 || row >= M) continue;
      int pos = filled++;
      while (pos > 0 && rows_K[pos - 1] > row) {
        rows_K[pos] = rows_K[pos - 1];
        --pos;
      }
      rows_K[pos] = row;
    }
    count = filled;
  }
  __syncthreads();
  return count;
}

// Block n copies token n's row to each of its kept rows, xs[pair_row[n,k]] =
// x[n] (rows outside [0, M) skipped): no M from the host, and every row is
// written by one block. The K destinations are read once into shared memory
// (sorted, which the copy does not need but the backward does).
template <typename TO, typename TI>
__global__ void permute_kernel(TO* xs_MD, const TI* x_ND, const int32_t* pair_row_NK, int64_t M, int64_t D, int K) {
  __shared__ int32_t rows_K[kMaxTopK];
  const int64_t n = blockIdx.x;
  const int rows = sorted_rows_of_token(rows_K, pair_row_NK, n, K, M);
  const TI* x = x_ND + n * D;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    const TO v = from_f32<TO>(to_f32(x[d]));
    for (int r = 0; r < rows; ++r) xs_MD[rows_K[r] * D + d] = v;
  }
}

// The same when both sides share a dtype: rows copied in words of W bytes.
template <typename W>
__global__ void permute_copy_kernel(W* xs_MV, const W* x_NV, const int32_t* pair_row_NK, int64_t M, int64_t V, int K) {
  __shared__ int32_t rows_K[kMaxTopK];
  const int64_t n = blockIdx.x;
  const int rows = sorted_rows_of_token(rows_K, pair_row_NK, n, K, M);
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const W value = x_NV[n * V + v];
    for (int r = 0; r < rows; ++r) xs_MV[rows_K[r] * V + v] = value;
  }
}

// Block n: dx[n] += dxs[r] over the kept rows r of token n, ascending r (the
// order of the CPU's loop over rows, so F32 sums round identically).
template <typename TDX, typename TDXS>
__global__ void permute_backward_kernel(TDX* dx_ND, const TDXS* dxs_MD, const int32_t* pair_row_NK, int64_t M,
                                        int64_t D, int K) {
  __shared__ int32_t rows_K[kMaxTopK];
  const int64_t n = blockIdx.x;
  const int rows = sorted_rows_of_token(rows_K, pair_row_NK, n, K, M);
  if (rows == 0) return;
  TDX* dx = dx_ND + n * D;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = to_f32(dx[d]);
    for (int i = 0; i < rows; ++i) acc = __fadd_rn(acc, to_f32(dxs_MD[rows_K[i] * D + d]));
    dx[d] = from_f32<TDX>(acc);
  }
}

// Block n: out[n] += sum_k w[n,k] * ys[pair_row[n,k]], slot order, one
// rounding per product and per sum as on the CPU.
template <typename TOUT, typename TYS>
__global__ void unpermute_kernel(TOUT* out_ND, const TYS* ys_MD, const float* topk_w_NK, const int32_t* pair_row_NK,
                                 int64_t M, int64_t D, int K) {
  __shared__ int32_t rows_K[kMaxTopK];
  __shared__ float w_K[kMaxTopK];
  const int64_t n = blockIdx.x;
  if (threadIdx.x < K) {
    const int32_t row = pair_row_NK[n * K + threadIdx.x];
    rows_K[threadIdx.x] = row < M ? row : -1;
    w_K[threadIdx.x] = topk_w_NK[n * K + threadIdx.x];
  }
  __syncthreads();
  TOUT* out = out_ND + n * D;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = to_f32(out[d]);
    for (int k = 0; k < K; ++k) {
      if (rows_K[k] < 0) continue;
      acc = __fadd_rn(acc, __fmul_rn(w_K[k], to_f32(ys_MD[rows_K[k] * D + d])));
    }
    out[d] = from_f32<TOUT>(acc);
  }
}

// Block n, slot by slot: dys[row] = w * dout[n] and dtopk_w[n,k] = dot(dout[n],
// ys[row]) in fp32 (a fixed-order block reduction); 0 for a dropped pair.
template <typename TDYS, typename TDOUT, typename TYS>
__global__ void unpermute_backward_kernel(TDYS* dys_MD, float* dtopk_w_NK, const TDOUT* dout_ND, const TYS* ys_MD,
                                          const float* topk_w_NK, const int32_t* pair_row_NK, int64_t M, int64_t D,
                                          int K) {
  __shared__ float scratch[32];
  const int64_t n = blockIdx.x;
  const TDOUT* dout = dout_ND + n * D;
  for (int k = 0; k < K; ++k) {
    const int32_t row = pair_row_NK[n * K + k];  // the same for every thread: uniform branches
    if (row < 0 || row >= M) {
      if (threadIdx.x == 0) dtopk_w_NK[n * K + k] = 0.0f;
      continue;
    }
    const float w = topk_w_NK[n * K + k];
    const TYS* y = ys_MD + row * D;
    TDYS* dy = dys_MD + row * D;
    float dot = 0;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const float g = to_f32(dout[d]);
      dy[d] = from_f32<TDYS>(__fmul_rn(w, g));
      dot = fmaf(g, to_f32(y[d]), dot);
    }
    dot = block_sum(dot, scratch);
    if (threadIdx.x == 0) dtopk_w_NK[n * K + k] = dot;
  }
}

void expect_pair_map(const Tensor& pair_row_NK, int64_t N, int64_t K, const char* op) {
  expect_dtype(pair_row_NK, DType::kI32, op, "pair_row");
  expect(pair_row_NK.numel() == N * K, op,
         "pair_row " + pair_row_NK.shape_string() + " for N = " + std::to_string(N) + ", K = " + std::to_string(K));
}

void expect_top_k(int64_t K, const char* op) {
  expect(K >= 1 && K <= kMaxTopK, op, "K = " + std::to_string(K) + " must be in [1, " + std::to_string(kMaxTopK) + "]");
}

// Row copies move whole words: f(W{}) with the widest W of 16, 4 or 2 bytes
// that divides row_bytes and aligns both pointers (rows of bf16 elements are
// always whole 2-byte words).
template <typename F>
void with_copy_word(int64_t row_bytes, const void* a, const void* b, F&& f) {
  const auto aligned = [&](uintptr_t w) {
    return row_bytes % static_cast<int64_t>(w) == 0 && reinterpret_cast<uintptr_t>(a) % w == 0 &&
           reinterpret_cast<uintptr_t>(b) % w == 0;
  };
  if (aligned(16)) {
    f(uint4{});
  } else if (aligned(4)) {
    f(uint32_t{});
  } else {
    f(uint16_t{});
  }
}

// Threads for a row of `words` words: whole warps, at most kRowThreads.
unsigned row_threads(int64_t words) {
  return static_cast<unsigned>(std::min<int64_t>(kRowThreads, (words + 31) / 32 * 32));
}

}  // namespace

void moe_plan(const Tensor& offsets_E1, const Tensor& row_pair_M, const Tensor& pair_row_NK, const Tensor& topk_idx_NK,
              int64_t capacity, const Tensor& priority_NK) {
  const char* op = "cuda::moe_plan";
  expect_dtype(offsets_E1, DType::kI32, op, "offsets");
  expect_dtype(row_pair_M, DType::kI32, op, "row_pair");
  expect_dtype(topk_idx_NK, DType::kI32, op, "topk_idx");
  const int64_t E = offsets_E1.numel() - 1, K = topk_idx_NK.size(-1), N = rows_of(topk_idx_NK), P = N * K;
  const std::string shapes = "topk_idx " + topk_idx_NK.shape_string() + ", E = " + std::to_string(E) + ", capacity " +
                             std::to_string(capacity);
  expect(E >= 1 && E <= kMaxExperts, op, shapes + ": E must be in [1, " + std::to_string(kMaxExperts) + "]");
  expect(P < (int64_t{1} << 31), op, shapes + ": more than 2^31 pairs");
  expect(row_pair_M.numel() >= P, op, "row_pair buffer " + row_pair_M.shape_string() + " < N*K, " + shapes);
  expect_pair_map(pair_row_NK, N, K, op);
  cudaStream_t s = stream();
  if (P == 0) {
    check(cudaMemsetAsync(offsets_E1.data, 0, (E + 1) * sizeof(int32_t), s), std::string(op) + " " + shapes);
    return;
  }
  // capacity >= P drops nothing: the same as no limit, and it fits an int.
  int cap = capacity <= 0 || capacity >= P ? 0 : static_cast<int>(capacity);
  const bool by_priority = priority_NK.data != nullptr && cap > 0;
  if (priority_NK.data) {
    expect_dtype(priority_NK, DType::kF32, op, "priority");
    expect(priority_NK.numel() == P, op, "priority " + priority_NK.shape_string() + ", " + shapes);
  }
  const int64_t C = std::max<int64_t>(1, std::min<int64_t>((P + kMinChunkPairs - 1) / kMinChunkPairs, 1 + P / E));
  const int64_t L = (P + C - 1) / C;
  int32_t* offsets = offsets_E1.i32();
  int32_t* chunk_counts = row_pair_M.i32();  // (C-1) * E <= P entries of scratch, see the top of the file
  int32_t* pair_row = pair_row_NK.i32();
  const int32_t* idx = topk_idx_NK.i32();
  const unsigned walk_blocks = ceil_div(C, kPlanWarps);
  const size_t walk_shared = kPlanWarps * E * sizeof(int32_t);

  if (by_priority) {
    plan_priority_kernel<<<static_cast<unsigned>(E), kPriorityThreads, 0, s>>>(pair_row, idx, priority_NK.f32(), P,
                                                                               cap);
    check_launch(op, "(priority) " + shapes);
    cap = 0;  // the kept pairs are chosen
  }
  plan_walk_kernel<false><<<walk_blocks, kPlanWarps * 32, walk_shared, s>>>(
      offsets, chunk_counts, pair_row, idx, P, static_cast<int>(E), C, L, cap, by_priority);
  check_launch(op, "(count) " + shapes);
  if (C > 1) {
    plan_scan_kernel<<<static_cast<unsigned>(E), kScanThreads, 0, s>>>(offsets, chunk_counts, C);
    check_launch(op, "(scan) " + shapes);
  }
  plan_offsets_kernel<<<1, kOffsetThreads, 0, s>>>(offsets, static_cast<int>(E), cap);
  check_launch(op, "(offsets) " + shapes);
  plan_walk_kernel<true><<<walk_blocks, kPlanWarps * 32, walk_shared, s>>>(offsets, chunk_counts, pair_row, idx, P,
                                                                           static_cast<int>(E), C, L, cap, by_priority);
  check_launch(op, "(rank) " + shapes);
  plan_scatter_kernel<<<ceil_div(P, 256), 256, 0, s>>>(row_pair_M.i32(), pair_row, P);
  check_launch(op, "(scatter) " + shapes);
}

void gather_rows(const Tensor& dst_RD, const Tensor& src_RD, const Tensor& index_R) {
  const char* op = "cuda::gather_rows";
  expect_dtype(index_R, DType::kI32, op, "index");
  const int64_t R = index_R.numel(), rows = src_RD.ndim ? src_RD.size(0) : 0;
  const int64_t row_bytes = src_RD.size(-1) * dtype_bytes(src_RD.dtype);
  const std::string shapes =
      "dst " + dst_RD.shape_string() + ", src " + src_RD.shape_string() + ", index " + index_R.shape_string();
  expect(dst_RD.dtype == src_RD.dtype && dst_RD.size(-1) == src_RD.size(-1) && dst_RD.size(0) >= R, op, shapes);
  expect(R < (int64_t{1} << 31), op, shapes + ": more than 2^31 rows");
  if (R == 0 || row_bytes == 0) return;
  with_copy_word(row_bytes, dst_RD.data, src_RD.data, [&](auto word) {
    using W = decltype(word);
    const int64_t words = row_bytes / static_cast<int64_t>(sizeof(W));
    gather_rows_kernel<W><<<static_cast<unsigned>(R), row_threads(words), 0, stream()>>>(
        static_cast<W*>(dst_RD.data), static_cast<const W*>(src_RD.data), index_R.i32(), rows, words);
  });
  check_launch(op, shapes);
}

void moe_permute(const Tensor& xs_MD, const Tensor& x_ND, const Tensor& pair_row_NK) {
  const char* op = "cuda::moe_permute";
  const int64_t M = xs_MD.ndim ? xs_MD.size(0) : 0, N = rows_of(x_ND), D = x_ND.size(-1);
  if (N == 0) return;  // no tokens, no pairs
  const int64_t K = pair_row_NK.numel() / N;
  const std::string shapes = "xs " + xs_MD.shape_string() + ", x " + x_ND.shape_string();
  expect_top_k(K, op);
  expect(xs_MD.numel() == M * D, op, shapes);
  expect_pair_map(pair_row_NK, N, K, op);
  if (M == 0 || D == 0) return;
  const int64_t row_bytes = D * dtype_bytes(x_ND.dtype);
  if (xs_MD.dtype == x_ND.dtype) {
    with_copy_word(row_bytes, xs_MD.data, x_ND.data, [&](auto word) {
      using W = decltype(word);
      const int64_t words = row_bytes / static_cast<int64_t>(sizeof(W));
      permute_copy_kernel<W><<<static_cast<unsigned>(N), row_threads(words), 0, stream()>>>(
          static_cast<W*>(xs_MD.data), static_cast<const W*>(x_ND.data), pair_row_NK.i32(), M, words,
          static_cast<int>(K));
    });
  } else {
    with_activation_type(xs_MD, op, "xs", [&](auto to) {
      with_activation_type(x_ND, op, "x", [&](auto ti) {
        using TO = typename decltype(to)::type;
        using TI = typename decltype(ti)::type;
        permute_kernel<TO, TI><<<static_cast<unsigned>(N), kRowThreads, 0, stream()>>>(
            static_cast<TO*>(xs_MD.data), static_cast<const TI*>(x_ND.data), pair_row_NK.i32(), M, D,
            static_cast<int>(K));
      });
    });
  }
  check_launch(op, shapes);
}

void moe_permute_backward(const Tensor& dx_ND, const Tensor& dxs_MD, const Tensor& pair_row_NK) {
  const char* op = "cuda::moe_permute_backward";
  const int64_t M = dxs_MD.ndim ? dxs_MD.size(0) : 0, N = rows_of(dx_ND), D = dx_ND.size(-1);
  if (N == 0) return;  // no tokens, nothing to add to
  const int64_t K = pair_row_NK.numel() / N;
  const std::string shapes = "dx " + dx_ND.shape_string() + ", dxs " + dxs_MD.shape_string();
  expect_top_k(K, op);
  expect(dxs_MD.numel() == M * D, op, shapes);
  expect_pair_map(pair_row_NK, N, K, op);
  if (N == 0 || D == 0) return;
  with_activation_type(dx_ND, op, "dx", [&](auto tdx) {
    with_activation_type(dxs_MD, op, "dxs", [&](auto tdxs) {
      using TDX = typename decltype(tdx)::type;
      using TDXS = typename decltype(tdxs)::type;
      permute_backward_kernel<TDX, TDXS><<<static_cast<unsigned>(N), kRowThreads, 0, stream()>>>(
          static_cast<TDX*>(dx_ND.data), static_cast<const TDXS*>(dxs_MD.data), pair_row_NK.i32(), M, D,
          static_cast<int>(K));
    });
  });
  check_launch(op, shapes);
}

void moe_unpermute(const Tensor& out_ND, const Tensor& ys_MD, const Tensor& topk_w_NK, const Tensor& pair_row_NK) {
  const char* op = "cuda::moe_unpermute";
  expect_dtype(topk_w_NK, DType::kF32, op, "topk_w");
  const int64_t N = rows_of(out_ND), D = out_ND.size(-1), K = topk_w_NK.size(-1);
  const int64_t M = ys_MD.ndim ? ys_MD.size(0) : 0;
  const std::string shapes =
      "out " + out_ND.shape_string() + ", ys " + ys_MD.shape_string() + ", topk_w " + topk_w_NK.shape_string();
  expect_top_k(K, op);
  expect(topk_w_NK.numel() == N * K && ys_MD.numel() == M * D, op, shapes);
  expect_pair_map(pair_row_NK, N, K, op);
  if (N == 0 || D == 0) return;
  with_activation_type(out_ND, op, "out", [&](auto tout) {
    with_activation_type(ys_MD, op, "ys", [&](auto tys) {
      using TOUT = typename decltype(tout)::type;
      using TYS = typename decltype(tys)::type;
      unpermute_kernel<TOUT, TYS><<<static_cast<unsigned>(N), kRowThreads, 0, stream()>>>(
          static_cast<TOUT*>(out_ND.data), static_cast<const TYS*>(ys_MD.data), topk_w_NK.f32(), pair_row_NK.i32(), M,
          D, static_cast<int>(K));
    });
  });
  check_launch(op, shapes);
}

void moe_unpermute_backward(const Tensor& dys_MD, const Tensor& dtopk_w_NK, const Tensor& dout_ND, const Tensor& ys_MD,
                            const Tensor& topk_w_NK, const Tensor& pair_row_NK) {
  const char* op = "cuda::moe_unpermute_backward";
  expect_dtype(dtopk_w_NK, DType::kF32, op, "dtopk_w");
  expect_dtype(topk_w_NK, DType::kF32, op, "topk_w");
  const int64_t N = rows_of(dout_ND), D = dout_ND.size(-1), K = topk_w_NK.size(-1);
  const int64_t M = ys_MD.ndim ? ys_MD.size(0) : 0;
  const std::string shapes = "dys " + dys_MD.shape_string() + ", dout " + dout_ND.shape_string() + ", ys " +
                             ys_MD.shape_string() + ", topk_w " + topk_w_NK.shape_string();
  expect_top_k(K, op);
  expect(topk_w_NK.numel() == N * K && dtopk_w_NK.numel() == N * K && ys_MD.numel() == M * D && dys_MD.numel() == M * D,
         op, shapes);
  expect_pair_map(pair_row_NK, N, K, op);
  if (N == 0) return;
  with_activation_type(dys_MD, op, "dys", [&](auto tdys) {
    with_activation_type(dout_ND, op, "dout", [&](auto tdout) {
      with_activation_type(ys_MD, op, "ys", [&](auto tys) {
        using TDYS = typename decltype(tdys)::type;
        using TDOUT = typename decltype(tdout)::type;
        using TYS = typename decltype(tys)::type;
        unpermute_backward_kernel<TDYS, TDOUT, TYS><<<static_cast<unsigned>(N), kRowThreads, 0, stream()>>>(
            static_cast<TDYS*>(dys_MD.data), dtopk_w_NK.f32(), static_cast<const TDOUT*>(dout_ND.data),
            static_cast<const TYS*>(ys_MD.data), topk_w_NK.f32(), pair_row_NK.i32(), M, D, static_cast<int>(K));
      });
    });
  });
  check_launch(op, shapes);
}

}  // namespace moe::cuda
