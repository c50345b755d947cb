// Softmax cross-entropy on the GPU, loss and gradient in one kernel.
// Legend: n rows, V vocab. logits F32 or BF16; dlogits the same dtype (may be
// the same memory: in place); loss_n F32; targets_n I32.
#include <cmath>

#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/dense_util.cuh"

namespace moe::cuda {
namespace {

using namespace dense;

constexpr int kThreads = 512;

// Merges the running (max, sum of exp(x - max)) pair (m2, s2) into (m, s).
// A pair that has seen no value is (-inf, 0).
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  if (m2 > m) {
    s = s * expf(m - m2) + s2;  // m = -inf gives s = 0 * 0
    m = m2;
  } else if (m2 > -INFINITY) {
    s += s2 * expf(m2 - m);
  }
}

// One block per row. Pass 1: an online max / sum of exponentials over V in
// fp32, one pair per thread, merged across the block in a fixed order. Pass 2:
// dlogits[j] = exp(x[j] - lse) * grad_scale, minus grad_scale at the target.
// In place is safe: the target logit is read before the block barrier inside
// the reduction, and every other element is read by the thread that then
// writes it. A target outside [0, V) gives loss NaN (and no onehot term).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_kernel(float* loss_n, T* dlogits_nV, const T* logits_nV, const int32_t* targets_n, int64_t V,
                         float grad_scale) {
  __shared__ float shared_m[32];
  __shared__ float shared_s[32];
  __shared__ float shared_target;
  const int64_t row = blockIdx.x;
  const T* x_V = logits_nV + row * V;
  T* dx_V = dlogits_nV + row * V;
  const int32_t target = targets_n[row];
  const bool valid = target >= 0 && target < V;
  if (threadIdx.x == 0) shared_target = valid ? to_f32(x_V[target]) : NAN;

  float m = -INFINITY, s = 0.0f;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    const float v = to_f32(x_V[j]);
    if (v > m) {
      s = s * expf(m - v) + 1.0f;
      m = v;
    } else {
      s += expf(v - m);
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, offset);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, offset);
    merge(m, s, m2, s2);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    shared_m[warp] = m;
    shared_s[warp] = s;
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = static_cast<int>(blockDim.x >> 5);
    m = lane < warps ? shared_m[lane] : -INFINITY;
    s = lane < warps ? shared_s[lane] : 0.0f;
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, offset);
      const float s2 = __shfl_xor_sync(0xffffffffu, s, offset);
      merge(m, s, m2, s2);
    }
    if (lane == 0) {
      shared_m[0] = m;
      shared_s[0] = s;
    }
  }
  __syncthreads();
  const float lse = shared_m[0] + logf(shared_s[0]);
  if (threadIdx.x == 0) loss_n[row] = valid ? lse - shared_target : NAN;

  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    float g = expf(to_f32(x_V[j]) - lse) * grad_scale;
    if (j == target) g -= grad_scale;
    dx_V[j] = from_f32<T>(g);
  }
}

}  // namespace

void cross_entropy_forward_backward(const Tensor& loss_n, const Tensor& dlogits_nV, const Tensor& logits_nV,
                                    const Tensor& targets_n, float grad_scale) {
  const char* op = "cross_entropy_forward_backward";
  const auto args = {Arg{"loss", loss_n}, Arg{"dlogits", dlogits_nV}, Arg{"logits", logits_nV},
                     Arg{"targets", targets_n}};
  require_dtypes(loss_n.dtype == DType::kF32 && is_float_type(logits_nV.dtype) && dlogits_nV.dtype == logits_nV.dtype &&
                     targets_n.dtype == DType::kI32,
                 op, args, "loss f32, logits f32|bf16, dlogits the dtype of logits, targets i32");
  const int64_t rows = targets_n.numel();
  const int64_t V = logits_nV.ndim ? logits_nV.size(-1) : 0;
  require_shapes(V > 0 && logits_nV.numel() == rows * V && dlogits_nV.numel() == rows * V && loss_n.numel() == rows, op,
                 "want logits and dlogits [n, V], loss and targets [n]", args);
  if (rows == 0) return;
  require_grid_rows(rows, op, args);
  with_float_type(logits_nV.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    cross_entropy_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(
        loss_n.f32(), static_cast<T*>(dlogits_nV.data), static_cast<const T*>(logits_nV.data), targets_n.i32(), V,
        grad_scale);
  });
  check_launch(op, args);
}

}  // namespace moe::cuda
