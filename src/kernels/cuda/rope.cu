// Rotary position embedding on the GPU, rotate-half convention (HF Llama/Mixtral),
// in place. Legend: x [B, T, H, Dh] as N = B*T rows of H heads; the token in
// row n has position n % T; channel pairs (i, i + Dh/2) rotate by
// pos * inv_freq[i], inv_freq[i] = theta^(-2i/Dh). x is F32 or BF16.
#include <cmath>
#include <string>

#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/dense_util.cuh"

namespace moe::cuda {
namespace {

using namespace dense;

constexpr int kThreads = 256;
constexpr int kMaxHalf = 512;  // Dh <= 1024

// inv_freq computed on the host by the CPU reference's expression, so the
// angles (pos * inv_freq in fp32) are the CPU's bit for bit; only cos/sin may
// differ (CUDA's sincosf, within 2 ulp). Passed by value (2 KiB of kernel
// parameters) and staged in shared memory.
struct InvFreq {
  float v[kMaxHalf];
};

// One thread per (row n, pair i), applied to all H heads with one sincos.
template <typename T>
__global__ void __launch_bounds__(kThreads) rope_kernel(T* x_NHDh, int64_t N, int64_t T_len, int64_t H, int64_t Dh,
                                                        const InvFreq inv_freq, float sign, int64_t first) {
  __shared__ float freq[kMaxHalf];
  const int64_t half = Dh / 2;
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) freq[i] = inv_freq.v[i];
  __syncthreads();
  for (int64_t idx = global_index(); idx < N * half; idx += grid_stride()) {
    const int64_t n = idx / half;
    const int64_t i = idx - n * half;
    const float angle = static_cast<float>(first + n % T_len) * freq[i];
    float s, c;
    sincosf(angle, &s, &c);
    s *= sign;
    T* row_HDh = x_NHDh + n * H * Dh;
    for (int64_t h = 0; h < H; ++h) {
      T* x_Dh = row_HDh + h * Dh;
      const float lo = to_f32(x_Dh[i]);
      const float hi = to_f32(x_Dh[i + half]);
      x_Dh[i] = from_f32<T>(lo * c - hi * s);
      x_Dh[i + half] = from_f32<T>(hi * c + lo * s);
    }
  }
}

void rope(const char* op, const Tensor& x, float theta, float sign, int64_t first) {
  require_dtypes(is_float_type(x.dtype), op, {{"x", x}}, "x f32|bf16");
  require_shapes(x.ndim == 4 && x.size(3) % 2 == 0 && x.size(3) <= 2 * kMaxHalf, op,
                 "x must be [B, T, heads, Dh] with Dh even and at most " + std::to_string(2 * kMaxHalf), {{"x", x}});
  const int64_t N = x.size(0) * x.size(1), T_len = x.size(1), H = x.size(2), Dh = x.size(3);
  const int64_t half = Dh / 2;
  if (N == 0 || H == 0 || half == 0) return;
  InvFreq inv_freq{};
  for (int64_t i = 0; i < half; ++i) {
    // Same expression and types as cpu/rope.cc.
    inv_freq.v[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(Dh));
  }
  // Enough blocks to fill the GPU; each stages inv_freq once and loops.
  const unsigned blocks = grid_for(N * half, kThreads, 4096);
  with_float_type(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    rope_kernel<T><<<blocks, kThreads, 0, stream()>>>(static_cast<T*>(x.data), N, T_len, H, Dh, inv_freq, sign, first);
  });
  check_launch(op, {{"x", x}});
}

}  // namespace

void rope_forward(const Tensor& x_BTHDh, float theta, int64_t first_position) {
  rope("rope_forward", x_BTHDh, theta, 1.0f, first_position);
}

// The rotation is orthogonal: the gradient map rotates by the opposite angle.
void rope_backward(const Tensor& dx_BTHDh, float theta) { rope("rope_backward", dx_BTHDh, theta, -1.0f, 0); }

}  // namespace moe::cuda
