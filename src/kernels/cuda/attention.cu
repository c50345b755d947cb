// Causal self-attention with grouped KV heads on the GPU, flash-attention-2
// style: no T x T matrix is ever in memory. Same semantics as the CPU
// reference (src/kernels/cpu/attention.cc).
// Legend: B sequences, T length, H query heads, G kv heads (query head h reads
// kv head h / (H/G)), Dh head dim, scale 1/sqrt(Dh).
// q, out, dq, dout: [B, T, H, Dh]; k, v, dk, dv: [B, T, G, Dh]; lse: [B, H, T] F32.
//
// Kernels (all 256 threads, tiles staged in shared memory):
// - forward: one CTA per (query tile, head, sequence); it loops over the key
//   tiles of its causal prefix with an online softmax in fp32 (base-2
//   exponent, scores pre-scaled by scale * log2 e), keeps the output
//   accumulator in fp32 shared memory, and writes out and lse.
// - backward, three launches, no atomics, so the gradients are bitwise
//   deterministic (same inputs, same bits, run after run):
//   1. delta: D = rowsum(dout * out) per (b, h, t), fp32, into a scratch buffer.
//   2. dk/dv: one CTA per (key tile, kv head, sequence); it loops over the
//      H/G query heads of its group and over the query tiles at or after its
//      keys, recomputing P = exp(S - lse) and dS = P * (dP - D), summing
//      dV += P^T dout and dK += dS^T q in fp32 shared memory, then writes
//      dk, dv once. Each key row is owned by one CTA: no race.
//   3. dq: one CTA per (query tile, head, sequence); it loops over its causal
//      key tiles, recomputes S, P, dP and dS, sums dQ += dS k, writes dq once.
//   This recomputes S and dP twice (7 tile GEMMs instead of the 5 of a single
//   pass with atomic dq) in exchange for determinism and no fp32 dq buffer.
// - Tile GEMMs: BF16 inputs use tensor cores through WMMA (16x16x16 bf16,
//   fp32 accumulate; P and dS are rounded to bf16 for their GEMMs, as in
//   flash-attention); F32 inputs use CUDA cores in full fp32 (no TF32).
// - Head dims: kernels are built for Dh = 64 and 128; a smaller Dh runs on
//   the next one up with zero-padded columns (so any Dh <= 128 works, at the
//   cost of the padding); Dh > 128 is refused.
#include <cuda_bf16.h>
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "src/kernels/cuda/cuda_check.h"
#include "src/kernels/cuda/device_scratch.h"
#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/device_math.cuh"
#include "src/kernels/cuda/stream.h"

namespace moe::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kMaxHeadDim = 128;

// ---- element helpers (to_f32, from_f32, warp reductions: device_math.cuh) ----

constexpr int align128(int bytes) { return (bytes + 127) / 128 * 128; }

// Shared-memory row strides (in elements) of the tiles, by input type.
// BF16 tiles are WMMA operands: strides a multiple of 8 elements (16 bytes),
// padded by 8 against bank conflicts. F32 tiles feed the CUDA-core GEMM,
// which reads k tiles column-wise: an odd stride makes that conflict-free.
// fp32 accumulators (scores, outputs, gradients) are WMMA accumulators for
// BF16: strides a multiple of 4 floats.
template <typename T, int kDh>
struct Strides {
  static constexpr bool kTensorCores = std::is_same<T, bf16>::value;
  static constexpr int kIn = kTensorCores ? kDh + 8 : kDh + 1;  // q, k, v, dout tiles [rows][kDh]
  static constexpr int kAcc = kDh + 4;                          // fp32 [rows][kDh]
  static constexpr int scores(int cols) { return cols + 4; }    // fp32 [rows][cols]
  // P and dS as GEMM operands; for F32 they overwrite the fp32 scores in place.
  static constexpr int probs(int cols) { return kTensorCores ? cols + 8 : cols + 4; }
};

// ---- tile GEMM in shared memory ---------------------------------------------
// c[M x N] (fp32, row stride ldc) = (accumulate ? c : 0) + A[M x K] B[K x N], by the whole CTA.
// A(m, k) = kARow ? a[m * lda + k] : a[k * lda + m];  B(k, n) = kBRow ? b[k * ldb + n] : b[n * ldb + k].
// The caller synchronises before (inputs written) and after (c read).
template <int M, int N, int K, bool kARow, bool kBRow>
__device__ __forceinline__ void tile_gemm(float* c, int ldc, const bf16* a, int lda, const bf16* b, int ldb,
                                          bool accumulate) {
  using namespace nvcuda;
  static_assert(M % 16 == 0 && N % 16 == 0 && K % 16 == 0, "WMMA tiles are 16 x 16 x 16");
  using ALayout = typename std::conditional<kARow, wmma::row_major, wmma::col_major>::type;
  using BLayout = typename std::conditional<kBRow, wmma::row_major, wmma::col_major>::type;
  constexpr int kTilesN = N / 16;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  for (int t = warp; t < (M / 16) * kTilesN; t += kWarps) {
    const int m0 = (t / kTilesN) * 16, n0 = (t % kTilesN) * 16;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    float* ct = c + m0 * ldc + n0;
    if (accumulate) {
      wmma::load_matrix_sync(acc, ct, ldc, wmma::mem_row_major);
    } else {
      wmma::fill_fragment(acc, 0.0f);
    }
#pragma unroll
    for (int k0 = 0; k0 < K; k0 += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, ALayout> fa;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, BLayout> fb;
      wmma::load_matrix_sync(fa, kARow ? a + m0 * lda + k0 : a + k0 * lda + m0, lda);
      wmma::load_matrix_sync(fb, kBRow ? b + k0 * ldb + n0 : b + n0 * ldb + k0, ldb);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(ct, acc, ldc, wmma::mem_row_major);
  }
}

// The fp32 version on CUDA cores: each thread computes whole dot products.
template <int M, int N, int K, bool kARow, bool kBRow>
__device__ __forceinline__ void tile_gemm(float* c, int ldc, const float* a, int lda, const float* b, int ldb,
                                          bool accumulate) {
  for (int idx = static_cast<int>(threadIdx.x); idx < M * N; idx += kThreads) {
    const int m = idx / N, n = idx % N;
    float acc = accumulate ? c[m * ldc + n] : 0.0f;
#pragma unroll 8
    for (int k = 0; k < K; ++k) {
      const float av = kARow ? a[m * lda + k] : a[k * lda + m];
      const float bv = kBRow ? b[k * ldb + n] : b[n * ldb + k];
      acc = fmaf(av, bv, acc);
    }
    c[m * ldc + n] = acc;
  }
}

// ---- global <-> shared tiles ------------------------------------------------

// What every kernel needs to know about the problem.
struct Problem {
  int B, T, H, G, dh;
  float scale;       // 1/sqrt(dh)
  float scale_log2;  // scale * log2(e)
  bool vec;          // dh == the kernel's kDh and every pointer 16-byte aligned: 16-byte loads
};

// Rows [row0, row0 + R) of one head of a [B, T, heads, dh] tensor into s[R][ld] (kDh
// columns). `g` points at (b, t = 0, head, 0); rows are `stride` elements apart.
// Rows at or past T and columns at or past dh are zero (they must not be garbage:
// 0 * NaN would leak into the GEMMs).
template <typename T, int R, int kDh, int ld>
__device__ __forceinline__ void load_tile(T* s, const T* g, int64_t stride, int row0, const Problem& p) {
  if (p.vec) {
    constexpr int kChunk = 16 / sizeof(T);  // elements per 16-byte load
    constexpr int kChunks = kDh / kChunk;
    for (int idx = static_cast<int>(threadIdx.x); idx < R * kChunks; idx += kThreads) {
      const int r = idx / kChunks, d = (idx % kChunks) * kChunk;
      const int t = row0 + r;
      union {
        uint4 u;
        T e[kChunk];
      } chunk;
      chunk.u = t < p.T ? __ldg(reinterpret_cast<const uint4*>(g + t * stride + d)) : make_uint4(0, 0, 0, 0);
      if constexpr (std::is_same<T, bf16>::value) {
        *reinterpret_cast<uint4*>(s + r * ld + d) = chunk.u;  // ld * 2 bytes is a multiple of 16
      } else {
#pragma unroll
        for (int e = 0; e < kChunk; ++e) s[r * ld + d + e] = chunk.e[e];
      }
    }
  } else {
    for (int idx = static_cast<int>(threadIdx.x); idx < R * kDh; idx += kThreads) {
      const int r = idx / kDh, d = idx % kDh;
      const int t = row0 + r;
      s[r * ld + d] = (t < p.T && d < p.dh) ? g[t * stride + d] : from_f32<T>(0.0f);
    }
  }
}

// g[row0 + r][d] = factor * acc[r][d] for the rows before T and the columns before dh.
template <typename T, int R, int kDh, int ld>
__device__ __forceinline__ void store_tile(T* g, int64_t stride, int row0, const float* acc, float factor,
                                           const Problem& p) {
  for (int idx = static_cast<int>(threadIdx.x); idx < R * kDh; idx += kThreads) {
    const int r = idx / kDh, d = idx % kDh;
    const int t = row0 + r;
    if (t >= p.T || d >= p.dh) continue;
    T* dst = g + t * stride + d;
    *dst = from_f32<T>(factor * acc[r * ld + d]);
  }
}

template <int R, int ld>
__device__ __forceinline__ void zero_tile(float* s, int cols) {
  for (int idx = static_cast<int>(threadIdx.x); idx < R * cols; idx += kThreads)
    s[(idx / cols) * ld + idx % cols] = 0.0f;
}

// ---- forward ----------------------------------------------------------------

template <typename T, int kDh>
struct ForwardTiles {
  using S = Strides<T, kDh>;
  static constexpr int kBr = S::kTensorCores ? 64 : 32;  // queries per CTA
  static constexpr int kBc = S::kTensorCores ? 64 : 32;  // keys per step
  static constexpr int kLdS = S::scores(kBc), kLdP = S::probs(kBc);
  // Byte offsets in dynamic shared memory.
  static constexpr int kQ = 0;
  static constexpr int kK = kQ + align128(kBr * S::kIn * sizeof(T));
  static constexpr int kV = kK + align128(kBc * S::kIn * sizeof(T));
  static constexpr int kS = kV + align128(kBc * S::kIn * sizeof(T));
  static constexpr int kP = S::kTensorCores ? kS + align128(kBr * kLdS * 4) : kS;
  static constexpr int kO = kP + align128(kBr * kLdP * sizeof(T));
  static constexpr int kStats = kO + align128(kBr * S::kAcc * 4);  // running max m, sum l, rescale alpha
  static constexpr int kBytes = kStats + align128(3 * kBr * 4);
};

template <typename T, int kDh>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(T* out, float* lse, const T* q, const T* k, const T* v, Problem p) {
  using L = ForwardTiles<T, kDh>;
  using S = typename L::S;
  constexpr int kBr = L::kBr, kBc = L::kBc;
  extern __shared__ __align__(128) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem + L::kQ);
  T* sK = reinterpret_cast<T*>(smem + L::kK);
  T* sV = reinterpret_cast<T*>(smem + L::kV);
  float* sS = reinterpret_cast<float*>(smem + L::kS);
  T* sP = reinterpret_cast<T*>(smem + L::kP);
  float* sO = reinterpret_cast<float*>(smem + L::kO);
  float* sM = reinterpret_cast<float*>(smem + L::kStats);
  float* sL = sM + kBr;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;

  // The longest causal prefixes (last query tiles) start first.
  const int q0 = (static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x)) * kBr;
  const int h = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
  const int g = h / (p.H / p.G);
  const int64_t q_stride = static_cast<int64_t>(p.H) * p.dh, kv_stride = static_cast<int64_t>(p.G) * p.dh;
  const int64_t q_head = (static_cast<int64_t>(b) * p.T * p.H + h) * p.dh;
  const int64_t kv_head = (static_cast<int64_t>(b) * p.T * p.G + g) * p.dh;

  load_tile<T, kBr, kDh, S::kIn>(sQ, q + q_head, q_stride, q0, p);
  zero_tile<kBr, S::kAcc>(sO, kDh);
  for (int r = static_cast<int>(threadIdx.x); r < kBr; r += kThreads) {
    sM[r] = -INFINITY;
    sL[r] = 0.0f;
  }

  const int keys = min(q0 + kBr, p.T);  // the tile's last query sees keys [0, keys)
  for (int k0 = 0; k0 < keys; k0 += kBc) {
    __syncthreads();  // the previous step is done with sK, sV, sP
    load_tile<T, kBc, kDh, S::kIn>(sK, k + kv_head, kv_stride, k0, p);
    load_tile<T, kBc, kDh, S::kIn>(sV, v + kv_head, kv_stride, k0, p);
    __syncthreads();
    tile_gemm<kBr, kBc, kDh, true, false>(sS, L::kLdS, sQ, S::kIn, sK, S::kIn, false);  // S = Q K^T
    __syncthreads();
    // Online softmax, a warp per row. Query i sees key j when j <= i and j < T. Every
    // row, padding rows past T included, sees key 0, so every running max is finite
    // after the first tile; rows fully masked in a later tile keep their max (alpha = 1).
    for (int r = warp; r < kBr; r += kWarps) {
      const int i = q0 + r;
      float* s_row = sS + r * L::kLdS;
      T* p_row = sP + r * L::kLdP;  // for F32, the same memory as s_row: each lane rewrites its own entries
      float tile_max = -INFINITY;
      for (int c = lane; c < kBc; c += 32) {
        const int j = k0 + c;
        const float x = (j <= i && j < p.T) ? s_row[c] * p.scale_log2 : -INFINITY;
        s_row[c] = x;
        tile_max = fmaxf(tile_max, x);
      }
      tile_max = warp_max(tile_max);
      const float m_old = sM[r];
      const float m_new = fmaxf(m_old, tile_max);
      float sum = 0.0f;
      for (int c = lane; c < kBc; c += 32) {
        const float e = exp2f(s_row[c] - m_new);
        p_row[c] = from_f32<T>(e);
        sum += e;
      }
      sum = warp_sum(sum);
      const float alpha = exp2f(m_old - m_new);  // 0 on the first tile (m_old = -inf)
      float* o_row = sO + r * S::kAcc;
      for (int d = lane; d < kDh; d += 32) o_row[d] *= alpha;
      __syncwarp();
      if (lane == 0) {
        sM[r] = m_new;
        sL[r] = sL[r] * alpha + sum;
      }
    }
    __syncthreads();
    tile_gemm<kBr, kDh, kBc, true, true>(sO, S::kAcc, sP, L::kLdP, sV, S::kIn, true);  // O += P V
  }
  __syncthreads();

  // out = O / l; lse = ln(sum_j exp(s_j)) = (m + log2 l) ln 2.
  for (int idx = static_cast<int>(threadIdx.x); idx < kBr * kDh; idx += kThreads) {
    const int r = idx / kDh, d = idx % kDh;
    const int i = q0 + r;
    if (i < p.T && d < p.dh) out[q_head + i * q_stride + d] = from_f32<T>(sO[r * S::kAcc + d] / sL[r]);
  }
  float* lse_T = lse + (static_cast<int64_t>(b) * p.H + h) * p.T;
  for (int r = static_cast<int>(threadIdx.x); r < kBr; r += kThreads) {
    if (q0 + r < p.T) lse_T[q0 + r] = (sM[r] + log2f(sL[r])) * kLn2;
  }
}

// ---- backward ---------------------------------------------------------------

// delta[b, h, t] = sum_d dout[b, t, h, d] * out[b, t, h, d] (fp32), a warp per row.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    attention_delta_kernel(float* delta, const T* dout, const T* out, int64_t rows, Problem p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;  // (b * T + t) * H + h
  if (row >= rows) return;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const T* dout_row = dout + row * p.dh;
  const T* out_row = out + row * p.dh;
  float sum = 0.0f;
  for (int d = lane; d < p.dh; d += 32) sum += to_f32(dout_row[d]) * to_f32(out_row[d]);
  sum = warp_sum(sum);
  if (lane == 0) {
    const int64_t h = row % p.H, bt = row / p.H, t = bt % p.T, b = bt / p.T;
    delta[(b * p.H + h) * p.T + t] = sum;
  }
}

// Loads the per-row lse (pre-multiplied by log2 e) and delta of query rows
// [i0, i0 + R) of head (b, h); rows past T get 0 (their P is masked to 0).
template <int R>
__device__ __forceinline__ void load_row_stats(float* s_lse2, float* s_delta, const float* lse, const float* delta,
                                               int b, int h, int i0, const Problem& p) {
  const int64_t base = (static_cast<int64_t>(b) * p.H + h) * p.T;
  for (int r = static_cast<int>(threadIdx.x); r < R; r += kThreads) {
    const int i = i0 + r;
    s_lse2[r] = i < p.T ? lse[base + i] * kLog2e : 0.0f;
    s_delta[r] = i < p.T ? delta[base + i] : 0.0f;
  }
}

// P = exp(S - lse) and dS = P * (dP - delta) for the [R x C] tile of queries
// i0 + r and keys j0 + c; entries with j > i or i >= T are 0. S and dP are fp32
// (stride ldS); P and dS are written as T (stride ldP; for F32 they overwrite
// S and dP in place, each thread its own entries). P may be null (not needed).
template <typename T, int R, int C>
__device__ __forceinline__ void probs_and_dscores(T* sP, T* sdS, int ldP, const float* sS, const float* sdP, int ldS,
                                                  const float* s_lse2, const float* s_delta, int i0, int j0,
                                                  const Problem& p) {
  for (int idx = static_cast<int>(threadIdx.x); idx < R * C; idx += kThreads) {
    const int r = idx / C, c = idx % C;
    const int i = i0 + r, j = j0 + c;
    const float prob = (i < p.T && j <= i) ? exp2f(sS[r * ldS + c] * p.scale_log2 - s_lse2[r]) : 0.0f;
    const float ds = prob * (sdP[r * ldS + c] - s_delta[r]);
    if (sP != nullptr) sP[r * ldP + c] = from_f32<T>(prob);
    sdS[r * ldP + c] = from_f32<T>(ds);
  }
}

template <typename T, int kDh>
struct DkDvTiles {
  using S = Strides<T, kDh>;
  static constexpr int kBc = S::kTensorCores ? 64 : 32;                    // keys per CTA
  static constexpr int kBr = S::kTensorCores ? (kDh > 64 ? 32 : 64) : 32;  // queries per step
  static constexpr int kLdS = S::scores(kBc), kLdP = S::probs(kBc);
  static constexpr int kK = 0;
  static constexpr int kV = kK + align128(kBc * S::kIn * sizeof(T));
  static constexpr int kQ = kV + align128(kBc * S::kIn * sizeof(T));
  static constexpr int kDout = kQ + align128(kBr * S::kIn * sizeof(T));
  static constexpr int kS = kDout + align128(kBr * S::kIn * sizeof(T));
  static constexpr int kDP = kS + align128(kBr * kLdS * 4);
  static constexpr int kP = S::kTensorCores ? kDP + align128(kBr * kLdS * 4) : kS;
  static constexpr int kDS = S::kTensorCores ? kP + align128(kBr * kLdP * sizeof(T)) : kDP;
  static constexpr int kDK =
      (S::kTensorCores ? kDS + align128(kBr * kLdP * sizeof(T)) : kDP + align128(kBr * kLdS * 4));
  static constexpr int kDV = kDK + align128(kBc * S::kAcc * 4);
  static constexpr int kStats = kDV + align128(kBc * S::kAcc * 4);  // lse * log2 e, delta
  static constexpr int kBytes = kStats + align128(2 * kBr * 4);
};

template <typename T, int kDh>
__global__ void __launch_bounds__(kThreads)
    attention_dkdv_kernel(T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const float* lse,
                          const float* delta, Problem p) {
  using L = DkDvTiles<T, kDh>;
  using S = typename L::S;
  constexpr int kBr = L::kBr, kBc = L::kBc;
  extern __shared__ __align__(128) unsigned char smem[];
  T* sK = reinterpret_cast<T*>(smem + L::kK);
  T* sV = reinterpret_cast<T*>(smem + L::kV);
  T* sQ = reinterpret_cast<T*>(smem + L::kQ);
  T* sDout = reinterpret_cast<T*>(smem + L::kDout);
  float* sS = reinterpret_cast<float*>(smem + L::kS);
  float* sDP = reinterpret_cast<float*>(smem + L::kDP);
  T* sP = reinterpret_cast<T*>(smem + L::kP);
  T* sDS = reinterpret_cast<T*>(smem + L::kDS);
  float* sDK = reinterpret_cast<float*>(smem + L::kDK);
  float* sDV = reinterpret_cast<float*>(smem + L::kDV);
  float* sLse2 = reinterpret_cast<float*>(smem + L::kStats);
  float* sDelta = sLse2 + kBr;

  // Key tile 0 has the most queries after it: it starts first.
  const int j0 = static_cast<int>(blockIdx.x) * kBc;
  const int g = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
  const int heads_per_group = p.H / p.G;
  const int64_t q_stride = static_cast<int64_t>(p.H) * p.dh, kv_stride = static_cast<int64_t>(p.G) * p.dh;
  const int64_t kv_head = (static_cast<int64_t>(b) * p.T * p.G + g) * p.dh;

  load_tile<T, kBc, kDh, S::kIn>(sK, k + kv_head, kv_stride, j0, p);
  load_tile<T, kBc, kDh, S::kIn>(sV, v + kv_head, kv_stride, j0, p);
  zero_tile<kBc, S::kAcc>(sDK, kDh);
  zero_tile<kBc, S::kAcc>(sDV, kDh);

  for (int hh = 0; hh < heads_per_group; ++hh) {
    const int h = g * heads_per_group + hh;
    const int64_t q_head = (static_cast<int64_t>(b) * p.T * p.H + h) * p.dh;
    // Queries before j0 see none of these keys.
    for (int i0 = j0; i0 < p.T; i0 += kBr) {
      __syncthreads();  // the previous step is done with sQ, sDout, sP, sDS
      load_tile<T, kBr, kDh, S::kIn>(sQ, q + q_head, q_stride, i0, p);
      load_tile<T, kBr, kDh, S::kIn>(sDout, dout + q_head, q_stride, i0, p);
      load_row_stats<kBr>(sLse2, sDelta, lse, delta, b, h, i0, p);
      __syncthreads();
      tile_gemm<kBr, kBc, kDh, true, false>(sS, L::kLdS, sQ, S::kIn, sK, S::kIn, false);      // S = Q K^T
      tile_gemm<kBr, kBc, kDh, true, false>(sDP, L::kLdS, sDout, S::kIn, sV, S::kIn, false);  // dP = dout V^T
      __syncthreads();
      probs_and_dscores<T, kBr, kBc>(sP, sDS, L::kLdP, sS, sDP, L::kLdS, sLse2, sDelta, i0, j0, p);
      __syncthreads();
      tile_gemm<kBc, kDh, kBr, false, true>(sDV, S::kAcc, sP, L::kLdP, sDout, S::kIn, true);  // dV += P^T dout
      tile_gemm<kBc, kDh, kBr, false, true>(sDK, S::kAcc, sDS, L::kLdP, sQ, S::kIn, true);    // dK += dS^T Q
    }
  }
  __syncthreads();
  store_tile<T, kBc, kDh, S::kAcc>(dk + kv_head, kv_stride, j0, sDK, p.scale, p);
  store_tile<T, kBc, kDh, S::kAcc>(dv + kv_head, kv_stride, j0, sDV, 1.0f, p);
}

template <typename T, int kDh>
struct DqTiles {
  using S = Strides<T, kDh>;
  static constexpr int kBr = S::kTensorCores ? 64 : 32;                    // queries per CTA
  static constexpr int kBc = S::kTensorCores ? (kDh > 64 ? 32 : 64) : 32;  // keys per step
  static constexpr int kLdS = S::scores(kBc), kLdP = S::probs(kBc);
  static constexpr int kQ = 0;
  static constexpr int kDout = kQ + align128(kBr * S::kIn * sizeof(T));
  static constexpr int kK = kDout + align128(kBr * S::kIn * sizeof(T));
  static constexpr int kV = kK + align128(kBc * S::kIn * sizeof(T));
  static constexpr int kS = kV + align128(kBc * S::kIn * sizeof(T));
  static constexpr int kDP = kS + align128(kBr * kLdS * 4);
  static constexpr int kDS = S::kTensorCores ? kDP + align128(kBr * kLdS * 4) : kDP;
  static constexpr int kDQ =
      (S::kTensorCores ? kDS + align128(kBr * kLdP * sizeof(T)) : kDP + align128(kBr * kLdS * 4));
  static constexpr int kStats = kDQ + align128(kBr * S::kAcc * 4);
  static constexpr int kBytes = kStats + align128(2 * kBr * 4);
};

template <typename T, int kDh>
__global__ void __launch_bounds__(kThreads)
    attention_dq_kernel(T* dq, const T* dout, const T* q, const T* k, const T* v, const float* lse, const float* delta,
                        Problem p) {
  using L = DqTiles<T, kDh>;
  using S = typename L::S;
  constexpr int kBr = L::kBr, kBc = L::kBc;
  extern __shared__ __align__(128) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem + L::kQ);
  T* sDout = reinterpret_cast<T*>(smem + L::kDout);
  T* sK = reinterpret_cast<T*>(smem + L::kK);
  T* sV = reinterpret_cast<T*>(smem + L::kV);
  float* sS = reinterpret_cast<float*>(smem + L::kS);
  float* sDP = reinterpret_cast<float*>(smem + L::kDP);
  T* sDS = reinterpret_cast<T*>(smem + L::kDS);
  float* sDQ = reinterpret_cast<float*>(smem + L::kDQ);
  float* sLse2 = reinterpret_cast<float*>(smem + L::kStats);
  float* sDelta = sLse2 + kBr;

  const int i0 = (static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x)) * kBr;
  const int h = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
  const int g = h / (p.H / p.G);
  const int64_t q_stride = static_cast<int64_t>(p.H) * p.dh, kv_stride = static_cast<int64_t>(p.G) * p.dh;
  const int64_t q_head = (static_cast<int64_t>(b) * p.T * p.H + h) * p.dh;
  const int64_t kv_head = (static_cast<int64_t>(b) * p.T * p.G + g) * p.dh;

  load_tile<T, kBr, kDh, S::kIn>(sQ, q + q_head, q_stride, i0, p);
  load_tile<T, kBr, kDh, S::kIn>(sDout, dout + q_head, q_stride, i0, p);
  load_row_stats<kBr>(sLse2, sDelta, lse, delta, b, h, i0, p);
  zero_tile<kBr, S::kAcc>(sDQ, kDh);

  const int keys = min(i0 + kBr, p.T);
  for (int j0 = 0; j0 < keys; j0 += kBc) {
    __syncthreads();  // the previous step is done with sK, sV, sDS
    load_tile<T, kBc, kDh, S::kIn>(sK, k + kv_head, kv_stride, j0, p);
    load_tile<T, kBc, kDh, S::kIn>(sV, v + kv_head, kv_stride, j0, p);
    __syncthreads();
    tile_gemm<kBr, kBc, kDh, true, false>(sS, L::kLdS, sQ, S::kIn, sK, S::kIn, false);      // S = Q K^T
    tile_gemm<kBr, kBc, kDh, true, false>(sDP, L::kLdS, sDout, S::kIn, sV, S::kIn, false);  // dP = dout V^T
    __syncthreads();
    probs_and_dscores<T, kBr, kBc>(nullptr, sDS, L::kLdP, sS, sDP, L::kLdS, sLse2, sDelta, i0, j0, p);
    __syncthreads();
    tile_gemm<kBr, kDh, kBc, true, true>(sDQ, S::kAcc, sDS, L::kLdP, sK, S::kIn, true);  // dQ += dS K
  }
  __syncthreads();
  store_tile<T, kBr, kDh, S::kAcc>(dq + q_head, q_stride, i0, sDQ, p.scale, p);
}

// ---- host side --------------------------------------------------------------

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

// Raises the kernel's dynamic shared-memory limit to `bytes` on `device`, or
// throws if the device cannot give that much to one block.
void allow_shared_memory(const void* kernel, int device, int bytes, const std::string& what) {
  int optin = 0;
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), what);
  if (bytes > optin) {
    throw std::runtime_error(what + ": needs " + std::to_string(bytes) +
                             " bytes of shared memory per block, the device allows " + std::to_string(optin));
  }
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), what);
}

// Launches `kernel` with L::kBytes of dynamic shared memory on the backend's
// stream, raising the kernel's limit on its first launch on each device (the
// attribute belongs to the device's context: a process that checks several
// GPUs raises it on each).
template <typename L, typename Kernel, typename... Args>
void launch(Kernel kernel, dim3 grid, const std::string& what, Args... args) {
  static std::vector<std::pair<int, const void*>> configured;  // (device, kernel) pairs whose limit is raised
  int device = 0;
  check(cudaGetDevice(&device), what);
  const std::pair<int, const void*> key(device, reinterpret_cast<const void*>(kernel));
  if (std::find(configured.begin(), configured.end(), key) == configured.end()) {
    allow_shared_memory(key.second, device, L::kBytes, what);
    configured.push_back(key);
  }
  kernel<<<grid, kThreads, L::kBytes, stream()>>>(args...);
  check(cudaGetLastError(), what);
}

// Delta (B * H * T floats) between the backward's first kernel and the others.
DeviceScratch& delta_scratch() {
  static DeviceScratch scratch("delta scratch");
  return scratch;
}

std::string shapes_of(const Tensor& q, const Tensor& k) {
  return "q " + q.shape_string() + " " + dtype_name(q.dtype) + ", k " + k.shape_string() + " " + dtype_name(k.dtype);
}

void expect(bool ok, const std::string& op, const std::string& what) {
  if (!ok) throw std::logic_error(op + ": " + what);
}

// Checks the shapes, dtypes and devices shared by forward and backward, and
// returns the problem description. `same_as_q` must have q's shape and dtype;
// `same_as_k` k's; lse is F32 [B, H, T].
Problem validate(const std::string& op, const Tensor& q, const Tensor& k, const Tensor& lse,
                 std::initializer_list<const Tensor*> same_as_q, std::initializer_list<const Tensor*> same_as_k) {
  const std::string shapes = shapes_of(q, k);
  expect(q.ndim == 4 && k.ndim == 4, op, "q and k must be [B, T, heads, Dh]: " + shapes);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), G = k.size(2), dh = q.size(3);
  expect(k.size(0) == B && k.size(1) == T && k.size(3) == dh, op, "k does not match q in B, T or Dh: " + shapes);
  expect(G > 0 && H % G == 0, op, "query heads must be a multiple of kv heads: " + shapes);
  expect((q.dtype == DType::kF32 || q.dtype == DType::kBF16) && k.dtype == q.dtype, op,
         "q, k, v, out (and gradients) must all be F32 or all BF16: " + shapes);
  expect(dh > 0 && dh <= kMaxHeadDim, op,
         "head dim " + std::to_string(dh) + " is not supported (1 to " + std::to_string(kMaxHeadDim) + "): " + shapes);
  expect(H <= 65535 && G <= 65535 && B <= 65535, op, "more than 65535 heads or sequences: " + shapes);
  expect(T < (int64_t{1} << 30), op, "sequence longer than 2^30: " + shapes);
  auto same = [&](const Tensor* t, const Tensor& like, const char* like_name) {
    expect(t->ndim == 4 && t->size(0) == like.size(0) && t->size(1) == like.size(1) && t->size(2) == like.size(2) &&
               t->size(3) == like.size(3) && t->dtype == like.dtype,
           op,
           std::string("a tensor of ") + t->shape_string() + " " + dtype_name(t->dtype) + " should be " +
               like.shape_string() + " " + dtype_name(like.dtype) + " like " + like_name + " (" + shapes + ")");
    expect(t->data != nullptr && t->device == Device::kCuda, op, "every tensor must be on the GPU: " + shapes);
  };
  for (const Tensor* t : same_as_q) same(t, q, "q");
  for (const Tensor* t : same_as_k) same(t, k, "k");
  expect(q.data != nullptr && q.device == Device::kCuda, op, "every tensor must be on the GPU: " + shapes);
  expect(lse.dtype == DType::kF32 && lse.numel() == B * H * T && lse.data != nullptr && lse.device == Device::kCuda, op,
         "lse must be an F32 device tensor [B, H, T] = [" + std::to_string(B) + ", " + std::to_string(H) + ", " +
             std::to_string(T) + "], is " + lse.shape_string() + " " + dtype_name(lse.dtype) + " (" + shapes + ")");

  Problem p{};
  p.B = static_cast<int>(B);
  p.T = static_cast<int>(T);
  p.H = static_cast<int>(H);
  p.G = static_cast<int>(G);
  p.dh = static_cast<int>(dh);
  p.scale = 1.0f / std::sqrt(static_cast<float>(dh));
  p.scale_log2 = p.scale * kLog2e;
  bool vec = aligned16(q.data) && aligned16(k.data);
  for (const Tensor* t : same_as_q) vec = vec && aligned16(t->data);
  for (const Tensor* t : same_as_k) vec = vec && aligned16(t->data);
  p.vec = vec;  // and dh == kDh, set per kernel below
  return p;
}

template <typename T, int kDh>
void forward_impl(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v, Problem p,
                  const std::string& what) {
  using L = ForwardTiles<T, kDh>;
  p.vec = p.vec && p.dh == kDh;
  const dim3 grid(static_cast<unsigned>(ceil_div(p.T, L::kBr)), p.H, p.B);
  launch<L>(attention_forward_kernel<T, kDh>, grid, what, static_cast<T*>(out.data), lse.f32(),
            static_cast<const T*>(q.data), static_cast<const T*>(k.data), static_cast<const T*>(v.data), p);
}

template <typename T, int kDh>
void backward_impl(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout, const Tensor& q,
                   const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse, Problem p,
                   const std::string& what) {
  p.vec = p.vec && p.dh == kDh;
  const int64_t rows = static_cast<int64_t>(p.B) * p.T * p.H;
  float* delta = static_cast<float*>(delta_scratch().get(static_cast<size_t>(rows) * sizeof(float), what));
  attention_delta_kernel<T><<<static_cast<unsigned>(ceil_div(rows, kWarps)), kThreads, 0, stream()>>>(
      delta, static_cast<const T*>(dout.data), static_cast<const T*>(out.data), rows, p);
  check(cudaGetLastError(), what + " (delta)");

  using LKV = DkDvTiles<T, kDh>;
  launch<LKV>(attention_dkdv_kernel<T, kDh>, dim3(static_cast<unsigned>(ceil_div(p.T, LKV::kBc)), p.G, p.B),
              what + " (dk, dv)", static_cast<T*>(dk.data), static_cast<T*>(dv.data), static_cast<const T*>(dout.data),
              static_cast<const T*>(q.data), static_cast<const T*>(k.data), static_cast<const T*>(v.data),
              static_cast<const float*>(lse.data), static_cast<const float*>(delta), p);

  using LQ = DqTiles<T, kDh>;
  launch<LQ>(attention_dq_kernel<T, kDh>, dim3(static_cast<unsigned>(ceil_div(p.T, LQ::kBr)), p.H, p.B), what + " (dq)",
             static_cast<T*>(dq.data), static_cast<const T*>(dout.data), static_cast<const T*>(q.data),
             static_cast<const T*>(k.data), static_cast<const T*>(v.data), static_cast<const float*>(lse.data),
             static_cast<const float*>(delta), p);
}

// Calls f.template operator()<T, kDh>() for the tensors' dtype and the kernel head dim that covers dh.
template <typename F>
void dispatch(DType dtype, int dh, F&& f) {
  if (dtype == DType::kBF16) {
    if (dh <= 64) return f(bf16{}, std::integral_constant<int, 64>{});
    return f(bf16{}, std::integral_constant<int, 128>{});
  }
  if (dh <= 64) return f(float{}, std::integral_constant<int, 64>{});
  return f(float{}, std::integral_constant<int, 128>{});
}

// Every tile layout fits the 163 KiB an sm_80 block may opt into (sm_90: 227 KiB).
constexpr int kSm80SharedBytes = 163 * 1024;
static_assert(ForwardTiles<bf16, 128>::kBytes <= kSm80SharedBytes &&
                  ForwardTiles<float, 128>::kBytes <= kSm80SharedBytes,
              "forward tiles exceed sm_80 shared memory");
static_assert(DkDvTiles<bf16, 128>::kBytes <= kSm80SharedBytes && DkDvTiles<float, 128>::kBytes <= kSm80SharedBytes,
              "dk/dv tiles exceed sm_80 shared memory");
static_assert(DqTiles<bf16, 128>::kBytes <= kSm80SharedBytes && DqTiles<float, 128>::kBytes <= kSm80SharedBytes,
              "dq tiles exceed sm_80 shared memory");

}  // namespace

void attention_forward(const Tensor& out, const Tensor& lse_BHT, const Tensor& q, const Tensor& k, const Tensor& v) {
  const std::string op = "attention_forward";
  const Problem p = validate(op, q, k, lse_BHT, {&out}, {&v});
  if (p.B == 0 || p.T == 0) return;
  const std::string what = op + " (" + shapes_of(q, k) + ")";
  dispatch(q.dtype, p.dh,
           [&](auto t, auto dh) { forward_impl<decltype(t), decltype(dh)::value>(out, lse_BHT, q, k, v, p, what); });
}

void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout, const Tensor& q,
                        const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse_BHT) {
  const std::string op = "attention_backward";
  const Problem p = validate(op, q, k, lse_BHT, {&dq, &dout, &out}, {&dk, &dv, &v});
  if (p.B == 0 || p.T == 0) return;
  const std::string what = op + " (" + shapes_of(q, k) + ")";
  dispatch(q.dtype, p.dh, [&](auto t, auto dh) {
    backward_impl<decltype(t), decltype(dh)::value>(dq, dk, dv, dout, q, k, v, out, lse_BHT, p, what);
  });
}

void reserve_attention(int64_t B, int64_t T, int64_t H) {
  delta_scratch().get(static_cast<size_t>(B * T * H) * sizeof(float), "reserve_attention");
}

}  // namespace moe::cuda
