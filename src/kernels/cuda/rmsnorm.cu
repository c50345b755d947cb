// RMSNorm on the GPU: out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps).
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

template <typename TO, typename TX, typename TW>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_forward_kernel(TO* out_ND, float* rstd_N, const TX* x_ND, const TW* w_D, int64_t N, int64_t D, float eps) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;  // whole warp
  const int lane = threadIdx.x & 31;
  const TX* x_D = x_ND + n * D;
  float sum_sq = 0;
  for (int64_t d = lane; d < D; d += 32) {
    const float v = to_f32(x_D[d]);
    sum_sq += v * v;
  }
  sum_sq = warp_sum(sum_sq);
  const float rstd = 1.0f / sqrtf(sum_sq / static_cast<float>(D) + eps);
  if (lane == 0) rstd_N[n] = rstd;
  TO* out_D = out_ND + n * D;  // may alias x_D: each element is read before the same lane writes it
  for (int64_t d = lane; d < D; d += 32) out_D[d] = from_f32<TO>(to_f32(x_D[d]) * rstd * to_f32(w_D[d]));
}

// With g = dout * w:  dx += rstd * g - rstd^3 * x * mean(g * x).
template <typename TDX, typename TDO, typename TX, typename TW>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_backward_dx_kernel(TDX* dx_ND, const TDO* dout_ND, const TX* x_ND, const TW* w_D, const float* rstd_N,
                               int64_t N, int64_t D) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const int lane = threadIdx.x & 31;
  const TX* x_D = x_ND + n * D;
  const TDO* dout_D = dout_ND + n * D;
  float gx = 0;
  for (int64_t d = lane; d < D; d += 32) gx += to_f32(dout_D[d]) * to_f32(w_D[d]) * to_f32(x_D[d]);
  gx = warp_sum(gx);
  const float rstd = rstd_N[n];
  const float coef = gx / static_cast<float>(D) * rstd * rstd * rstd;
  TDX* dx_D = dx_ND + n * D;
  for (int64_t d = lane; d < D; d += 32) {
    const float grad = rstd * to_f32(dout_D[d]) * to_f32(w_D[d]) - coef * to_f32(x_D[d]);
    dx_D[d] = from_f32<TDX>(to_f32(dx_D[d]) + grad);
  }
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

}  // namespace

void rmsnorm_forward(const Tensor& out_ND, const Tensor& rstd_N, const Tensor& x_ND, const Tensor& w_D, float eps) {
  const char* op = "rmsnorm_forward";
  const auto args = {Arg{"out", out_ND}, Arg{"rstd", rstd_N}, Arg{"x", x_ND}, Arg{"w", w_D}};
  require_dtypes(is_float_type(out_ND.dtype) && rstd_N.dtype == DType::kF32 && is_float_type(x_ND.dtype) &&
                     is_float_type(w_D.dtype),
                 op, args, "out f32|bf16, rstd f32, x f32|bf16, w f32|bf16");
  const int64_t D = w_D.numel();
  require_shapes(D > 0 && x_ND.numel() % D == 0 && out_ND.numel() == x_ND.numel() && rstd_N.numel() == x_ND.numel() / D,
                 op, "want x and out [N, D], w [D], rstd [N]", args);
  const int64_t N = x_ND.numel() / D;
  if (N == 0) return;
  const unsigned blocks = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
  with_float_type(out_ND.dtype, [&](auto out_tag) {
    with_float_type(x_ND.dtype, [&](auto x_tag) {
      with_float_type(w_D.dtype, [&](auto w_tag) {
        using TO = typename decltype(out_tag)::type;
        using TX = typename decltype(x_tag)::type;
        using TW = typename decltype(w_tag)::type;
        rmsnorm_forward_kernel<TO, TX, TW><<<blocks, kThreads, 0, stream()>>>(
            static_cast<TO*>(out_ND.data), rstd_N.f32(), static_cast<const TX*>(x_ND.data),
            static_cast<const TW*>(w_D.data), N, D, eps);
      });
    });
  });
  check_launch(op, args);
}

void rmsnorm_backward(const Tensor& dx_ND, const Tensor& dw_D, const Tensor& dout_ND, const Tensor& x_ND,
                      const Tensor& w_D, const Tensor& rstd_N) {
  const char* op = "rmsnorm_backward";
  const auto args = {Arg{"dx", dx_ND}, Arg{"dw", dw_D}, Arg{"dout", dout_ND},
                     Arg{"x", x_ND},   Arg{"w", w_D},   Arg{"rstd", rstd_N}};
  require_dtypes(is_float_type(dx_ND.dtype) && dw_D.dtype == DType::kF32 && is_float_type(dout_ND.dtype) &&
                     is_float_type(x_ND.dtype) && is_float_type(w_D.dtype) && rstd_N.dtype == DType::kF32,
                 op, args, "dx f32|bf16, dw f32, dout f32|bf16, x f32|bf16, w f32|bf16, rstd f32");
  const int64_t D = w_D.numel();
  require_shapes(D > 0 && x_ND.numel() % D == 0 && dx_ND.numel() == x_ND.numel() && dout_ND.numel() == x_ND.numel() &&
                     dw_D.numel() == D && rstd_N.numel() == x_ND.numel() / D,
                 op, "want dx, dout and x [N, D], w and dw [D], rstd [N]", args);
  const int64_t N = x_ND.numel() / D;
  if (N == 0) return;

  const unsigned blocks = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
  with_float_type(dx_ND.dtype, [&](auto dx_tag) {
    with_float_type(dout_ND.dtype, [&](auto dout_tag) {
      with_float_type(x_ND.dtype, [&](auto x_tag) {
        with_float_type(w_D.dtype, [&](auto w_tag) {
          using TDX = typename decltype(dx_tag)::type;
          using TDO = typename decltype(dout_tag)::type;
          using TX = typename decltype(x_tag)::type;
          using TW = typename decltype(w_tag)::type;
          rmsnorm_backward_dx_kernel<TDX, TDO, TX, TW><<<blocks, kThreads, 0, stream()>>>(
              static_cast<TDX*>(dx_ND.data), static_cast<const TDO*>(dout_ND.data), static_cast<const TX*>(x_ND.data),
              static_cast<const TW*>(w_D.data), rstd_N.f32(), N, D);
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
