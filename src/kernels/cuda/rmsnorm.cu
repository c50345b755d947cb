// RMSNorm on the GPU: out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps),
// alone or after a residual add (add_rmsnorm_forward); rows move in 16-byte
// packs where D and the tensors allow.
// Legend: N rows, D features. x, out, dx, dout, w: F32 or BF16 each; rstd_N and
// dw_D F32. Every sum is fp32.
#include <algorithm>
#include <string>

#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/device_scratch.h"
#include "src/kernels/cuda/dense_util.cuh"

namespace moe::cuda {
namespace {

using namespace dense;

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;  // one warp per row

// dw: blocks of kCols columns x kRowGroups row groups; the rows are split
// into at most kMaxChunks chunks of at least kMinChunkRows rows (a function of
// N only, so the summation order never depends on the device).
constexpr int kCols = 32;
constexpr int kRowGroups = 8;
constexpr int64_t kMaxChunks = 64;
constexpr int64_t kMinChunkRows = 256;

// A warp's share of one row: lane `lane` visits packs lane, lane + 32, ... of
// kPack values (`packed`: D a multiple of kPack and every row 16-byte
// aligned), or single values lane, lane + 32, ... otherwise. visit(v, i, width)
// gets `width` values starting at element i.
template <typename Visit>
__device__ __forceinline__ void for_row(int64_t D, int lane, bool packed, Visit&& visit) {
  if (packed) {
    for (int64_t p = lane; p < D / kPack; p += 32) visit(p * kPack, kPack);
  } else {
    for (int64_t d = lane; d < D; d += 32) visit(d, 1);
  }
}

// Reads `width` (1 or kPack) values of row r at element i as floats.
template <typename T>
__device__ __forceinline__ void read_row(const T* r, int64_t i, int width, float (&v)[kPack]) {
  if (width == kPack) return load_pack(r, i / kPack, v);
  v[0] = to_f32(r[i]);
}
template <typename T>
__device__ __forceinline__ void write_row(T* r, int64_t i, int width, const float (&v)[kPack]) {
  if (width == kPack) return store_pack(r, i / kPack, v);
  r[i] = from_f32<T>(v[0]);
}

// out = s * rstd * w with s the row x, or (add_rmsnorm_forward, y given) the
// row x + y, rounded to TX and stored in sum. out may alias x, y or sum: each
// element is read before the same lane writes it.
template <typename TO, typename TX, typename TW>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_forward_kernel(TO* out_ND, float* rstd_N, const TX* x_ND, const TX* y_ND, TX* sum_ND, const TW* w_D,
                           int64_t N, int64_t D, float eps, bool packed) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;  // whole warp
  const int lane = threadIdx.x & 31;
  const TX* x_D = x_ND + n * D;
  const TX* s_D = y_ND != nullptr ? sum_ND + n * D : x_D;  // the row being normalised
  float sum_sq = 0;
  for_row(D, lane, packed, [&](int64_t i, int width) {
    float v[kPack];
    read_row(x_D, i, width, v);
    if (y_ND != nullptr) {
      float u[kPack];
      read_row(y_ND + n * D, i, width, u);
      for (int k = 0; k < width; ++k) v[k] = to_f32(from_f32<TX>(v[k] + u[k]));
      write_row(sum_ND + n * D, i, width, v);
    }
    for (int k = 0; k < width; ++k) sum_sq += v[k] * v[k];
  });
  sum_sq = warp_sum(sum_sq);
  const float rstd = 1.0f / sqrtf(sum_sq / static_cast<float>(D) + eps);
  if (lane == 0) rstd_N[n] = rstd;
  TO* out_D = out_ND + n * D;
  for_row(D, lane, packed, [&](int64_t i, int width) {
    float v[kPack], w[kPack];
    read_row(s_D, i, width, v);
    read_row(w_D, i, width, w);
    for (int k = 0; k < width; ++k) v[k] = v[k] * rstd * w[k];
    write_row(out_D, i, width, v);
  });
}

// With g = dout * w:  dx = dresidual + rstd * g - rstd^3 * x * mean(g * x);
// dresidual null: none. dx may alias dresidual.
template <typename TDX, typename TDO, typename TX, typename TW>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_backward_dx_kernel(TDX* dx_ND, const TDX* dres_ND, const TDO* dout_ND, const TX* x_ND, const TW* w_D,
                               const float* rstd_N, int64_t N, int64_t D, bool packed) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const int lane = threadIdx.x & 31;
  const TX* x_D = x_ND + n * D;
  const TDO* dout_D = dout_ND + n * D;
  float gx = 0;
  for_row(D, lane, packed, [&](int64_t i, int width) {
    float g[kPack], w[kPack], x[kPack];
    read_row(dout_D, i, width, g);
    read_row(w_D, i, width, w);
    read_row(x_D, i, width, x);
    for (int k = 0; k < width; ++k) gx += g[k] * w[k] * x[k];
  });
  gx = warp_sum(gx);
  const float rstd = rstd_N[n];
  const float coef = gx / static_cast<float>(D) * rstd * rstd * rstd;
  TDX* dx_D = dx_ND + n * D;
  for_row(D, lane, packed, [&](int64_t i, int width) {
    float g[kPack], w[kPack], x[kPack], r[kPack] = {};
    read_row(dout_D, i, width, g);
    read_row(w_D, i, width, w);
    read_row(x_D, i, width, x);
    if (dres_ND != nullptr) read_row(dres_ND + n * D, i, width, r);
    for (int k = 0; k < width; ++k) r[k] += rstd * g[k] * w[k] - coef * x[k];
    write_row(dx_D, i, width, r);
  });
}

// Block (column tile, row chunk): sums dout * x * rstd over the chunk's rows
// for kCols columns, kRowGroups rows at a time, then over the row groups in a
// fixed order. With one chunk it adds into dw directly; otherwise it writes the
// chunk's partial row partials[chunk][col] for rmsnorm_dw_reduce_kernel.
template <typename TDO, typename TX>
__global__ void __launch_bounds__(kCols* kRowGroups)
    rmsnorm_backward_dw_kernel(float* dw_D, float* partials_CD, const TDO* dout_ND, const TX* x_ND, const float* rstd_N,
                               int64_t N, int64_t D, int64_t rows_per_chunk) {
  __shared__ float part[kRowGroups][kCols];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kCols + threadIdx.x;
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t end = begin + rows_per_chunk < N ? begin + rows_per_chunk : N;
  float acc = 0;
  if (col < D) {
    for (int64_t n = begin + threadIdx.y; n < end; n += kRowGroups) {
      acc += to_f32(dout_ND[n * D + col]) * to_f32(x_ND[n * D + col]) * rstd_N[n];
    }
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < D) {
    float sum = part[0][threadIdx.x];
    for (int g = 1; g < kRowGroups; ++g) sum += part[g][threadIdx.x];
    if (partials_CD == nullptr) {
      dw_D[col] += sum;
    } else {
      partials_CD[blockIdx.y * D + col] = sum;
    }
  }
}

// dw[col] += sum over chunks of partials[chunk][col], chunks in order.
__global__ void rmsnorm_dw_reduce_kernel(float* dw_D, const float* partials_CD, int64_t chunks, int64_t D) {
  for (int64_t col = global_index(); col < D; col += grid_stride()) {
    float sum = 0;
    for (int64_t c = 0; c < chunks; ++c) sum += partials_CD[c * D + col];
    dw_D[col] += sum;
  }
}

// The dw partials: chunks * D floats.
DeviceScratch& dw_scratch() {
  static DeviceScratch scratch("dw scratch");
  return scratch;
}

int64_t dw_chunks(int64_t N) { return std::min<int64_t>((N + kMinChunkRows - 1) / kMinChunkRows, kMaxChunks); }

// rmsnorm_forward and add_rmsnorm_forward (sum and y empty for the former).
void launch_rmsnorm_forward(const char* op, const Tensor& sum_ND, const Tensor& out_ND, const Tensor& rstd_N,
                            const Tensor& x_ND, const Tensor& y_ND, const Tensor& w_D, float eps) {
  const bool add = y_ND.data != nullptr;
  const auto args = {Arg{"sum", sum_ND}, Arg{"out", out_ND}, Arg{"rstd", rstd_N},
                     Arg{"x", x_ND},     Arg{"y", y_ND},     Arg{"w", w_D}};
  require_dtypes(is_float_type(out_ND.dtype) && rstd_N.dtype == DType::kF32 && is_float_type(x_ND.dtype) &&
                     is_float_type(w_D.dtype) && (!add || (y_ND.dtype == x_ND.dtype && sum_ND.dtype == x_ND.dtype)),
                 op, args, "out f32|bf16, rstd f32, x f32|bf16 (y and sum the same), w f32|bf16");
  const int64_t D = w_D.numel();
  require_shapes(D > 0 && x_ND.numel() % D == 0 && out_ND.numel() == x_ND.numel() &&
                     rstd_N.numel() == x_ND.numel() / D &&
                     (!add || (y_ND.numel() == x_ND.numel() && sum_ND.numel() == x_ND.numel())),
                 op, "want x, y, sum and out [N, D], w [D], rstd [N]", args);
  const int64_t N = x_ND.numel() / D;
  if (N == 0) return;
  const unsigned blocks = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
  const bool packed = packable(D, {out_ND.data, x_ND.data, y_ND.data, sum_ND.data, w_D.data});
  with_float_type(out_ND.dtype, [&](auto out_tag) {
    with_float_type(x_ND.dtype, [&](auto x_tag) {
      with_float_type(w_D.dtype, [&](auto w_tag) {
        using TO = typename decltype(out_tag)::type;
        using TX = typename decltype(x_tag)::type;
        using TW = typename decltype(w_tag)::type;
        rmsnorm_forward_kernel<TO, TX, TW><<<blocks, kThreads, 0, stream()>>>(
            static_cast<TO*>(out_ND.data), rstd_N.f32(), static_cast<const TX*>(x_ND.data),
            static_cast<const TX*>(y_ND.data), static_cast<TX*>(sum_ND.data), static_cast<const TW*>(w_D.data), N, D,
            eps, packed);
      });
    });
  });
  check_launch(op, args);
}

}  // namespace

void rmsnorm_forward(const Tensor& out_ND, const Tensor& rstd_N, const Tensor& x_ND, const Tensor& w_D, float eps) {
  launch_rmsnorm_forward("rmsnorm_forward", Tensor{}, out_ND, rstd_N, x_ND, Tensor{}, w_D, eps);
}

void add_rmsnorm_forward(const Tensor& sum_ND, const Tensor& out_ND, const Tensor& rstd_N, const Tensor& x_ND,
                         const Tensor& y_ND, const Tensor& w_D, float eps) {
  launch_rmsnorm_forward("add_rmsnorm_forward", sum_ND, out_ND, rstd_N, x_ND, y_ND, w_D, eps);
}

void rmsnorm_backward(const Tensor& dx_ND, const Tensor& dw_D, const Tensor& dout_ND, const Tensor& x_ND,
                      const Tensor& w_D, const Tensor& rstd_N, const Tensor& dresidual_ND) {
  const char* op = "rmsnorm_backward";
  const auto args = {Arg{"dx", dx_ND}, Arg{"dw", dw_D},     Arg{"dout", dout_ND},          Arg{"x", x_ND},
                     Arg{"w", w_D},    Arg{"rstd", rstd_N}, Arg{"dresidual", dresidual_ND}};
  require_dtypes(is_float_type(dx_ND.dtype) && dw_D.dtype == DType::kF32 && is_float_type(dout_ND.dtype) &&
                     is_float_type(x_ND.dtype) && is_float_type(w_D.dtype) && rstd_N.dtype == DType::kF32,
                 op, args, "dx f32|bf16, dw f32, dout f32|bf16, x f32|bf16, w f32|bf16, rstd f32");
  const int64_t D = w_D.numel();
  require_shapes(D > 0 && x_ND.numel() % D == 0 && dx_ND.numel() == x_ND.numel() && dout_ND.numel() == x_ND.numel() &&
                     dw_D.numel() == D && rstd_N.numel() == x_ND.numel() / D &&
                     (dresidual_ND.data == nullptr ||
                      (dresidual_ND.numel() == dx_ND.numel() && dresidual_ND.dtype == dx_ND.dtype)),
                 op, "want dx, dout, x and dresidual (dx's dtype, or empty) [N, D], w and dw [D], rstd [N]", args);
  const int64_t N = x_ND.numel() / D;
  if (N == 0) return;

  const unsigned blocks = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
  const bool packed = packable(D, {dx_ND.data, dresidual_ND.data, dout_ND.data, x_ND.data, w_D.data});
  with_float_type(dx_ND.dtype, [&](auto dx_tag) {
    with_float_type(dout_ND.dtype, [&](auto dout_tag) {
      with_float_type(x_ND.dtype, [&](auto x_tag) {
        with_float_type(w_D.dtype, [&](auto w_tag) {
          using TDX = typename decltype(dx_tag)::type;
          using TDO = typename decltype(dout_tag)::type;
          using TX = typename decltype(x_tag)::type;
          using TW = typename decltype(w_tag)::type;
          rmsnorm_backward_dx_kernel<TDX, TDO, TX, TW><<<blocks, kThreads, 0, stream()>>>(
              static_cast<TDX*>(dx_ND.data), static_cast<const TDX*>(dresidual_ND.data),
              static_cast<const TDO*>(dout_ND.data), static_cast<const TX*>(x_ND.data),
              static_cast<const TW*>(w_D.data), rstd_N.f32(), N, D, packed);
        });
      });
    });
  });
  check_launch(op, args);

  const int64_t chunks = dw_chunks(N);
  const int64_t rows_per_chunk = (N + chunks - 1) / chunks;
  float* partials =
      chunks > 1 ? static_cast<float*>(dw_scratch().get(static_cast<size_t>(chunks * D) * sizeof(float), op)) : nullptr;
  const dim3 dw_grid(static_cast<unsigned>((D + kCols - 1) / kCols), static_cast<unsigned>(chunks));
  const dim3 dw_block(kCols, kRowGroups);
  with_float_type(dout_ND.dtype, [&](auto dout_tag) {
    with_float_type(x_ND.dtype, [&](auto x_tag) {
      using TDO = typename decltype(dout_tag)::type;
      using TX = typename decltype(x_tag)::type;
      rmsnorm_backward_dw_kernel<TDO, TX>
          <<<dw_grid, dw_block, 0, stream()>>>(dw_D.f32(), partials, static_cast<const TDO*>(dout_ND.data),
                                               static_cast<const TX*>(x_ND.data), rstd_N.f32(), N, D, rows_per_chunk);
    });
  });
  check_launch(op, args);
  if (partials != nullptr) {
    rmsnorm_dw_reduce_kernel<<<grid_for(D, kThreads), kThreads, 0, stream()>>>(dw_D.f32(), partials, chunks, D);
    check_launch(op, args);
  }
}

void reserve_rmsnorm_backward(int64_t N, int64_t D) {
  const int64_t chunks = dw_chunks(N);
  if (chunks > 1) dw_scratch().get(static_cast<size_t>(chunks * D) * sizeof(float), "reserve_rmsnorm_backward");
}

}  // namespace moe::cuda
