// Grouped matmul on the GPU: for each expert e, rows [offsets[e], offsets[e+1])
// of x times W[e]. Legend: M row capacity (x.size(0)), E experts, I in
// features, O out features; W[e] is [I, O] row-major.
//   forward   out[rows of e]  = x[rows of e] W[e]
//   backward  dx[rows of e]  += dout[rows of e] W[e]^T
//             dW[e]          += x[rows of e]^T dout[rows of e]
//
// One launch per product, all experts at once, offsets read ON THE DEVICE:
// the host never learns how many rows an expert has, so a step needs no sync
// and can be captured as a CUDA graph.
//
// - Row products (forward, dx): a 1-D grid over a bound on the number of
//   (expert, BM-row tile) pairs, ceil(M / BM) + E, times ceil(N / BN) column
//   tiles. Each CTA scans the offsets (warp 0, 32 experts per step) to find
//   the expert and row tile of its flat index, and exits when the index is
//   past the last tile. Since sum_e ceil(rows_e / BM) < M / BM + E, the bound
//   covers every tile whatever the routing.
// - Weight gradient: a grid over (O tile, I tile, expert); each CTA loops over
//   all rows of its expert (the K dimension) and adds into dW[e]. An expert
//   with no rows exits at once.
//
// The tile GEMM (gemm_tile) computes C(m, n) (+)= sum_k A(m, k) B(k, n) on a
// BM x BN tile, with A or B read transposed from memory as each product needs.
// BF16 inputs use tensor cores through WMMA (16x16x16, fp32 accumulators);
// F32 inputs use fp32 FMAs (exact fp32 products, like the CPU reference).
// Every load is guarded (rows, columns and K need not be tile multiples);
// out-of-range elements are read as 0, and only in-range outputs are written.
//
// Performance ideas, to be measured on a GPU (correctness came first here):
// - cp.async (sm_80) or TMA (sm_90) multi-stage pipelines instead of the
//   load / sync / compute loop; larger tiles (128x128, 8 warps) for big
//   experts; wgmma on sm_90.
// - dW: split the expert's rows across CTAs (split-K with fp32 atomics or a
//   second reduction pass) when few (I, O) tiles exist or routing is skewed:
//   one CTA now walks all rows of its expert.
// - Precompute the tile -> expert map once per step (moe_plan could write it)
//   instead of the per-CTA scan; negligible for E <= 256.
// - The FMA path reads transposed B with 4-way shared-memory bank conflicts.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "src/kernels/cuda/cuda_check.h"
#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/device_math.cuh"
#include "src/kernels/cuda/stream.h"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "grouped_matmul.cu needs sm_80 or newer (bf16 tensor cores)"
#endif

namespace moe::cuda {
namespace {

constexpr int kBM = 64;        // rows of a tile
constexpr int kBN = 64;        // columns of a tile
constexpr int kBK = 32;        // K step
constexpr int kThreads = 128;  // 4 warps, 2 x 2, each a 32 x 32 sub-tile (WMMA path)
constexpr int kPad = 8;        // shared-memory row padding, in elements (keeps 16-byte rows, breaks bank stride)
constexpr int kCPad = 4;       // padding of the fp32 staging tile (WMMA store needs a multiple of 4)

// Shared-memory tiles of one K step. A is BM x BK (stored BK x BM when read
// transposed), B is BK x BN (stored BN x BK when read transposed); the
// contiguous dimension in memory is the contiguous one in shared memory, so
// global loads are coalesced either way.
template <typename T, bool kTransA, bool kTransB>
struct Tiles {
  static constexpr int kARows = kTransA ? kBK : kBM, kACols = kTransA ? kBM : kBK;
  static constexpr int kBRows = kTransB ? kBN : kBK, kBCols = kTransB ? kBK : kBN;
  static constexpr int kALd = kACols + kPad, kBLd = kBCols + kPad;
  static constexpr int kABytes = kARows * kALd * static_cast<int>(sizeof(T));
  static constexpr int kBBytes = kBRows * kBLd * static_cast<int>(sizeof(T));
};

constexpr int kCLd = kBN + kCPad;
constexpr int kCBytes = kBM * kCLd * 4;
template <typename T, bool kTransA, bool kTransB>
constexpr int tile_bytes() {
  return Tiles<T, kTransA, kTransB>::kABytes + Tiles<T, kTransA, kTransB>::kBBytes;
}
constexpr int max_of(int a, int b) { return a > b ? a : b; }
// Enough for every instantiation (the fp32 A + B tiles are the largest, 20 KiB);
// the WMMA epilogue's fp32 staging tile reuses the same bytes.
constexpr int kSmemBytes = max_of(max_of(kCBytes, tile_bytes<float, false, false>()),
                                  max_of(tile_bytes<float, true, false>(), tile_bytes<float, false, true>()));
static_assert(tile_bytes<bf16, false, false>() <= kSmemBytes && tile_bytes<bf16, true, false>() <= kSmemBytes &&
                  tile_bytes<bf16, false, true>() <= kSmemBytes,
              "smem");
// B starts right after A: keep it 128-byte aligned.
static_assert(Tiles<bf16, false, false>::kABytes % 128 == 0 && Tiles<bf16, true, false>::kABytes % 128 == 0 &&
                  Tiles<float, false, false>::kABytes % 128 == 0 && Tiles<float, true, false>::kABytes % 128 == 0,
              "B tile alignment");
// WMMA pointers must be 32-byte aligned: rows of A/B tiles start at 16-row
// (and 16-column) boundaries, so the tile strides must keep that.
static_assert((16 * (kBK + kPad) * 2) % 32 == 0 && (16 * (kBM + kPad) * 2) % 32 == 0, "wmma alignment");
static_assert((16 * kCLd * 4) % 32 == 0, "wmma alignment");

// Copies a kRows x kCols tile into shared memory (row stride kLd):
// dst[r][c] = src[(o0 + r) * ld + i0 + c] where o0 + r < o_lim and
// i0 + c < i_lim, else 0. 16-byte vector loads where a chunk is in range and
// aligned; element loads at the edges.
template <typename T, int kRows, int kCols, int kLd>
__device__ __forceinline__ void load_tile(T* dst, const T* __restrict__ src, int64_t ld, int64_t o0, int64_t o_lim,
                                          int64_t i0, int64_t i_lim) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  constexpr int kChunksPerRow = kCols / kVec;
  constexpr int kChunks = kRows * kChunksPerRow;
  static_assert(kCols % kVec == 0 && kLd % kVec == 0, "tile rows must hold whole 16-byte chunks");
  for (int c = threadIdx.x; c < kChunks; c += kThreads) {
    const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * kVec;
    const int64_t outer = o0 + r, inner = i0 + col;
    T* d = dst + r * kLd + col;
    if (outer < o_lim) {
      const T* s = src + outer * ld + inner;
      if (inner + kVec <= i_lim && (reinterpret_cast<uintptr_t>(s) & 15) == 0) {
        *reinterpret_cast<uint4*>(d) = *reinterpret_cast<const uint4*>(s);
      } else {
#pragma unroll
        for (int j = 0; j < kVec; ++j) d[j] = inner + j < i_lim ? s[j] : from_f32<T>(0.0f);
      }
    } else {
#pragma unroll
      for (int j = 0; j < kVec; ++j) d[j] = from_f32<T>(0.0f);
    }
  }
}

// C(m, n) = sum_{k in [k_begin, k_end)} A(m, k) B(k, n) (+ C(m, n) when
// accumulate) for m in [m0, min(m0 + BM, m_lim)), n in [n0, min(n0 + BN, n_lim)):
//   A(m, k) = kTransA ? A[k * lda + m] : A[m * lda + k]
//   B(k, n) = kTransB ? B[n * ldb + k] : B[k * ldb + n]
//   C(m, n) = C[m * ldc + n]
// All threads of the CTA must call it (it synchronises).
template <typename T, typename OutT, bool kTransA, bool kTransB>
__device__ __forceinline__ void gemm_tile(const T* __restrict__ A, int64_t lda, const T* __restrict__ B, int64_t ldb,
                                          OutT* __restrict__ C, int64_t ldc, int64_t m0, int64_t m_lim, int64_t n0,
                                          int64_t n_lim, int64_t k_begin, int64_t k_end, bool accumulate,
                                          unsigned char* smem) {
  using Tl = Tiles<T, kTransA, kTransB>;
  T* As = reinterpret_cast<T*>(smem);
  T* Bs = reinterpret_cast<T*>(smem + Tl::kABytes);
  const int tid = threadIdx.x;

  auto load_k_step = [&](int64_t k0) {
    if constexpr (kTransA) {
      load_tile<T, Tl::kARows, Tl::kACols, Tl::kALd>(As, A, lda, k0, k_end, m0, m_lim);
    } else {
      load_tile<T, Tl::kARows, Tl::kACols, Tl::kALd>(As, A, lda, m0, m_lim, k0, k_end);
    }
    if constexpr (kTransB) {
      load_tile<T, Tl::kBRows, Tl::kBCols, Tl::kBLd>(Bs, B, ldb, n0, n_lim, k0, k_end);
    } else {
      load_tile<T, Tl::kBRows, Tl::kBCols, Tl::kBLd>(Bs, B, ldb, k0, k_end, n0, n_lim);
    }
  };

  if constexpr (std::is_same_v<T, bf16>) {
    // ---- tensor cores: each warp owns a 32 x 32 sub-tile, 2 x 2 fragments ----
    namespace wmma = nvcuda::wmma;
    using LayoutA = std::conditional_t<kTransA, wmma::col_major, wmma::row_major>;
    using LayoutB = std::conditional_t<kTransB, wmma::col_major, wmma::row_major>;
    const int warp = tid / 32, wm = (warp / 2) * 32, wn = (warp % 2) * 32;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    for (int64_t k0 = k_begin; k0 < k_end; k0 += kBK) {
      load_k_step(k0);
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kBK; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, LayoutA> a[2];
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, LayoutB> b[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          // Row-major A(m, k) sits at As[m * ld + k]; col-major at As[k * ld + m].
          const T* p = kTransA ? As + kk * Tl::kALd + wm + i * 16 : As + (wm + i * 16) * Tl::kALd + kk;
          wmma::load_matrix_sync(a[i], p, Tl::kALd);
        }
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          // Row-major B(k, n) sits at Bs[k * ld + n]; col-major at Bs[n * ld + k].
          const T* p = kTransB ? Bs + (wn + j * 16) * Tl::kBLd + kk : Bs + kk * Tl::kBLd + wn + j * 16;
          wmma::load_matrix_sync(b[j], p, Tl::kBLd);
        }
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
      }
      __syncthreads();
    }

    // Stage the fp32 tile in shared memory (over A and B, which are done),
    // then write the in-range part with coalesced, guarded stores.
    float* Cs = reinterpret_cast<float*>(smem);
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        wmma::store_matrix_sync(Cs + (wm + i * 16) * kCLd + wn + j * 16, acc[i][j], kCLd, wmma::mem_row_major);
      }
    __syncthreads();
    for (int idx = tid; idx < kBM * kBN; idx += kThreads) {
      const int ml = idx / kBN, nl = idx % kBN;
      const int64_t m = m0 + ml, n = n0 + nl;
      if (m < m_lim && n < n_lim) {
        OutT* c = C + m * ldc + n;
        float v = Cs[ml * kCLd + nl];
        if (accumulate) v += to_f32(*c);
        *c = from_f32<OutT>(v);
      }
    }
  } else {
    // ---- fp32 FMAs: thread (tm, tn) owns rows tm + 8i and columns tn + 16j ----
    static_assert(kThreads == 128 && kBM == 64 && kBN == 64, "the FMA mapping assumes 8 x 16 threads");
    const int tm = tid / 16, tn = tid % 16;
    float acc[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int64_t k0 = k_begin; k0 < k_end; k0 += kBK) {
      load_k_step(k0);
      __syncthreads();
#pragma unroll 4
      for (int kk = 0; kk < kBK; ++kk) {
        float a[8], b[4];
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const int m = tm + 8 * i;
          a[i] = kTransA ? As[kk * Tl::kALd + m] : As[m * Tl::kALd + kk];
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int n = tn + 16 * j;
          b[j] = kTransB ? Bs[n * Tl::kBLd + kk] : Bs[kk * Tl::kBLd + n];
        }
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
      __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int64_t m = m0 + tm + 8 * i;
      if (m >= m_lim) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t n = n0 + tn + 16 * j;
        if (n < n_lim) {
          OutT* c = C + m * ldc + n;
          float v = acc[i][j];
          if (accumulate) v += to_f32(*c);
          *c = from_f32<OutT>(v);
        }
      }
    }
  }
}

// Rows [begin, end) of expert e, clamped to [0, M] and to begin <= end.
__device__ __forceinline__ void expert_rows(const int32_t* offsets, int e, int64_t M, int64_t* begin, int64_t* end) {
  int64_t b = offsets[e], en = offsets[e + 1];
  b = b < 0 ? 0 : (b > M ? M : b);
  en = en < b ? b : (en > M ? M : en);
  *begin = b;
  *end = en;
}

// out-or-dx rows: C[rows of e, :N] (+)= A[rows of e, :K] op(B_e), B_e = B + e * b_stride.
// kTransB = false: B_e(k, n) = B_e[k * ldb + n] (forward, W[e] is [K=I, N=O]);
// kTransB = true:  B_e(k, n) = B_e[n * ldb + k] (dx, W[e]^T with W[e] [N=I, K=O]).
template <typename T, typename OutT, bool kTransB>
__global__ void __launch_bounds__(kThreads)
    grouped_rows_kernel(OutT* __restrict__ C, const T* __restrict__ A, const T* __restrict__ B, int64_t b_stride,
                        const int32_t* __restrict__ offsets, int E, int64_t M, int64_t N, int64_t K, bool accumulate) {
  __shared__ __align__(128) unsigned char smem[kSmemBytes];
  __shared__ int s_expert;
  __shared__ long long s_row0, s_row_end;

  // Warp 0 finds the (expert, row tile) of this CTA's flat tile index: an
  // inclusive scan of per-expert tile counts, 32 experts at a time.
  const int tile = blockIdx.x;
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    if (lane == 0) s_expert = -1;
    __syncwarp();
    int carry = 0;
    for (int base = 0; base < E; base += 32) {
      const int e = base + lane;
      int64_t b = 0, en = 0;
      int count = 0;
      if (e < E) {
        expert_rows(offsets, e, M, &b, &en);
        count = static_cast<int>((en - b + kBM - 1) / kBM);
      }
      int incl = count;
#pragma unroll
      for (int d = 1; d < 32; d *= 2) {
        const int v = __shfl_up_sync(0xffffffffu, incl, d);
        if (lane >= d) incl += v;
      }
      const int excl = carry + incl - count;
      if (count > 0 && tile >= excl && tile < excl + count) {
        s_expert = e;
        s_row0 = b + static_cast<int64_t>(tile - excl) * kBM;
        s_row_end = en;
      }
      carry += __shfl_sync(0xffffffffu, incl, 31);
      if (carry > tile) break;  // carry is the same in every lane
    }
  }
  __syncthreads();
  const int e = s_expert;
  if (e < 0) return;  // past the last tile of the last expert
  gemm_tile<T, OutT, false, kTransB>(A, K, B + static_cast<int64_t>(e) * b_stride, kTransB ? K : N, C, N, s_row0,
                                     s_row_end, static_cast<int64_t>(blockIdx.y) * kBN, N, 0, K, accumulate, smem);
}

// dW[e] (I x O) += x[rows of e]^T dout[rows of e]: K runs over the expert's rows.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    grouped_dw_kernel(float* __restrict__ dW, const T* __restrict__ x, const T* __restrict__ dout,
                      const int32_t* __restrict__ offsets, int64_t M, int64_t I, int64_t O) {
  __shared__ __align__(128) unsigned char smem[kSmemBytes];
  const int e = blockIdx.z;
  int64_t begin, end;
  expert_rows(offsets, e, M, &begin, &end);
  if (begin >= end) return;  // no rows: dW[e] stays as it was (same value in every thread)
  gemm_tile<T, float, true, false>(x, I, dout, O, dW + static_cast<int64_t>(e) * I * O, O,
                                   static_cast<int64_t>(blockIdx.y) * kBM, I, static_cast<int64_t>(blockIdx.x) * kBN, O,
                                   begin, end, /*accumulate=*/true, smem);
}

// ---------------------------------------------------------------------------------------------------------------

// All dims but the last (also when the last is 0).
int64_t rows_of(const Tensor& t) {
  int64_t rows = 1;
  for (int d = 0; d + 1 < t.ndim; ++d) rows *= t.shape[d];
  return rows;
}

std::string describe(const Tensor& t) {
  return t.data ? std::string(dtype_name(t.dtype)) + t.shape_string() : std::string("(none)");
}

// Error messages name the op and every tensor; Describe builds that text only
// when it is needed, so a successful call builds no strings.
template <typename Describe>
void check_device(const char* op, std::initializer_list<const Tensor*> ts, const Describe& shapes) {
  for (const Tensor* t : ts) {
    if (t->data != nullptr && t->device != Device::kCuda) {
      throw std::logic_error(std::string(op) + ": host tensor passed to the CUDA backend: " + shapes());
    }
  }
}

template <typename Describe>
void check_launch(const char* op, const Describe& shapes) {
  const cudaError_t st = cudaGetLastError();
  if (st != cudaSuccess) check(st, std::string(op) + " " + shapes());
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Launches one row product with the dtypes of the tensors: C (+)= A op(B_e),
// N columns, K the reduction. Grid: (bound on row tiles, column tiles).
template <bool kTransB, typename Describe>
void launch_rows(const char* op, const Describe& shapes, const Tensor& C, const Tensor& A, const Tensor& W,
                 const Tensor& offsets, int64_t E, int64_t M, int64_t N, int64_t K, bool accumulate) {
  const int64_t tiles = ceil_div(M, kBM) + E, col_tiles = ceil_div(N, kBN);
  if (tiles > 0x7fffffff || col_tiles > 65535) {
    throw std::logic_error(std::string(op) + ": too many tiles for one launch: " + shapes());
  }
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(col_tiles));
  const int64_t stride = W.size(1) * W.size(2);
  const int e = static_cast<int>(E);
  const int32_t* off = static_cast<const int32_t*>(offsets.data);
  cudaStream_t s = stream();
  if (A.dtype == DType::kBF16 && C.dtype == DType::kBF16) {
    grouped_rows_kernel<bf16, bf16, kTransB>
        <<<grid, kThreads, 0, s>>>(static_cast<bf16*>(C.data), static_cast<const bf16*>(A.data),
                                   static_cast<const bf16*>(W.data), stride, off, e, M, N, K, accumulate);
  } else if (A.dtype == DType::kBF16 && C.dtype == DType::kF32) {
    grouped_rows_kernel<bf16, float, kTransB>
        <<<grid, kThreads, 0, s>>>(static_cast<float*>(C.data), static_cast<const bf16*>(A.data),
                                   static_cast<const bf16*>(W.data), stride, off, e, M, N, K, accumulate);
  } else if (A.dtype == DType::kF32 && C.dtype == DType::kF32) {
    grouped_rows_kernel<float, float, kTransB>
        <<<grid, kThreads, 0, s>>>(static_cast<float*>(C.data), static_cast<const float*>(A.data),
                                   static_cast<const float*>(W.data), stride, off, e, M, N, K, accumulate);
  } else {
    throw std::logic_error(std::string(op) + ": unsupported dtypes " + shapes());
  }
  check_launch(op, shapes);
}

// Inputs share one dtype (BF16 or F32); an output is F32, or BF16 for BF16 inputs.
bool types_ok(DType in, std::initializer_list<const Tensor*> inputs, std::initializer_list<const Tensor*> outputs) {
  bool ok = in == DType::kBF16 || in == DType::kF32;
  for (const Tensor* t : inputs) ok = ok && t->dtype == in;
  for (const Tensor* t : outputs) ok = ok && (t->dtype == DType::kF32 || (t->dtype == in && in == DType::kBF16));
  return ok;
}

}  // namespace

void grouped_matmul_forward(const Tensor& out_MO, const Tensor& x_MI, const Tensor& w_EIO, const Tensor& offsets_E1) {
  const char* op = "grouped_matmul_forward";
  const auto shapes = [&] {
    return describe(out_MO) + " = " + describe(x_MI) + " x " + describe(w_EIO) + ", offsets " + describe(offsets_E1);
  };
  const int64_t M = rows_of(x_MI), E = w_EIO.size(0), I = w_EIO.size(1), O = w_EIO.size(2);
  check_device(op, {&out_MO, &x_MI, &w_EIO, &offsets_E1}, shapes);
  if (!types_ok(x_MI.dtype, {&w_EIO}, {&out_MO}) || offsets_E1.dtype != DType::kI32) {
    throw std::logic_error(std::string(op) +
                           ": unsupported dtypes (x and w both bf16 or both f32; out f32, or bf16 for bf16 inputs; "
                           "offsets i32): " +
                           shapes());
  }
  if (M == 0 || O == 0 || E == 0) return;
  launch_rows<false>(op, shapes, out_MO, x_MI, w_EIO, offsets_E1, E, M, O, I, /*accumulate=*/false);
}

void grouped_matmul_backward(const Tensor& dx_MI, const Tensor& dw_EIO, const Tensor& dout_MO, const Tensor& x_MI,
                             const Tensor& w_EIO, const Tensor& offsets_E1) {
  const char* op = "grouped_matmul_backward";
  const auto shapes = [&] {
    return "dx " + describe(dx_MI) + ", dw " + describe(dw_EIO) + ", dout " + describe(dout_MO) + ", x " +
           describe(x_MI) + ", w " + describe(w_EIO) + ", offsets " + describe(offsets_E1);
  };
  const int64_t M = rows_of(x_MI), E = w_EIO.size(0), I = w_EIO.size(1), O = w_EIO.size(2);
  check_device(op, {&dx_MI, &dw_EIO, &dout_MO, &x_MI, &w_EIO, &offsets_E1}, shapes);
  const bool with_dx = dx_MI.data != nullptr;
  const bool ok =
      with_dx ? types_ok(x_MI.dtype, {&dout_MO, &w_EIO}, {&dx_MI}) : types_ok(x_MI.dtype, {&dout_MO, &w_EIO}, {});
  if (!ok || dw_EIO.dtype != DType::kF32 || offsets_E1.dtype != DType::kI32) {
    throw std::logic_error(std::string(op) +
                           ": unsupported dtypes (x, dout and w all bf16 or all f32; dx f32, or bf16 for bf16 "
                           "inputs; dw f32; offsets i32): " +
                           shapes());
  }
  if (M == 0 || E == 0 || I == 0 || O == 0) return;
  if (with_dx) launch_rows<true>(op, shapes, dx_MI, dout_MO, w_EIO, offsets_E1, E, M, I, O, /*accumulate=*/true);

  // dW: grid (O tiles, I tiles, experts).
  const int64_t o_tiles = ceil_div(O, kBN), i_tiles = ceil_div(I, kBM);
  if (o_tiles > 0x7fffffff || i_tiles > 65535 || E > 65535) {
    throw std::logic_error(std::string(op) + ": too many tiles for one launch: " + shapes());
  }
  const dim3 grid(static_cast<unsigned>(o_tiles), static_cast<unsigned>(i_tiles), static_cast<unsigned>(E));
  const int32_t* off = static_cast<const int32_t*>(offsets_E1.data);
  float* dw = static_cast<float*>(dw_EIO.data);
  if (x_MI.dtype == DType::kBF16) {
    grouped_dw_kernel<bf16><<<grid, kThreads, 0, stream()>>>(dw, static_cast<const bf16*>(x_MI.data),
                                                             static_cast<const bf16*>(dout_MO.data), off, M, I, O);
  } else {
    grouped_dw_kernel<float><<<grid, kThreads, 0, stream()>>>(dw, static_cast<const float*>(x_MI.data),
                                                              static_cast<const float*>(dout_MO.data), off, M, I, O);
  }
  check_launch(op, shapes);
}

}  // namespace moe::cuda
