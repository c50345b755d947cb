// Attention of one new token against a KV cache, for generation: one CTA per
// query head; its threads score the cached keys into shared memory, take the
// softmax with block reductions, and each output element sums the values.
// Same scale and softmax as the CPU reference (cpu::attention_decode).
#include <cmath>
#include <string>

#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/dense_util.cuh"
#include "src/kernels/cuda/device_math.cuh"

namespace moe::cuda {
namespace {

using namespace dense;

constexpr int kThreads = 128;
constexpr int64_t kMaxLength = 8192;  // scores in shared memory: 32 KiB, under the 48 KiB default

template <typename T>
__global__ void __launch_bounds__(kThreads)
    attention_decode_kernel(T* out_HDh, const T* q_HDh, const T* k_TGDh, const T* v_TGDh, int64_t length, int64_t H,
                            int64_t G, int64_t Dh, float scale) {
  extern __shared__ __align__(16) unsigned char decode_smem[];
  float* p = reinterpret_cast<float*>(decode_smem);  // [length] scores, then weights
  float* q = p + length;                             // [Dh]
  __shared__ float reduce[32];
  const int64_t h = blockIdx.x, g = h / (H / G);
  for (int64_t d = threadIdx.x; d < Dh; d += blockDim.x) q[d] = to_f32(q_HDh[h * Dh + d]);
  __syncthreads();
  float local_max = -INFINITY;
  for (int64_t t = threadIdx.x; t < length; t += blockDim.x) {
    const T* k = k_TGDh + (t * G + g) * Dh;
    float s = 0;
    for (int64_t d = 0; d < Dh; ++d) s += q[d] * to_f32(k[d]);
    p[t] = scale * s;
    local_max = fmaxf(local_max, p[t]);
  }
  const float max = block_max(local_max, reduce);
  float local_sum = 0;
  for (int64_t t = threadIdx.x; t < length; t += blockDim.x) {
    p[t] = expf(p[t] - max);
    local_sum += p[t];
  }
  const float sum = block_sum(local_sum, reduce);  // its barriers also publish p
  for (int64_t d = threadIdx.x; d < Dh; d += blockDim.x) {
    float acc = 0;
    for (int64_t t = 0; t < length; ++t) acc += p[t] / sum * to_f32(v_TGDh[(t * G + g) * Dh + d]);
    out_HDh[h * Dh + d] = from_f32<T>(acc);
  }
}

}  // namespace

using namespace dense;

void attention_decode(const Tensor& out_HDh, const Tensor& q_HDh, const Tensor& k_cache_TGDh,
                      const Tensor& v_cache_TGDh, int64_t length) {
  const char* op = "attention_decode";
  require_dtypes(is_float_type(q_HDh.dtype) && out_HDh.dtype == q_HDh.dtype && k_cache_TGDh.dtype == q_HDh.dtype &&
                     v_cache_TGDh.dtype == q_HDh.dtype,
                 op, {{"out", out_HDh}, {"q", q_HDh}, {"k_cache", k_cache_TGDh}, {"v_cache", v_cache_TGDh}},
                 "all f32 or all bf16");
  require_shapes(length <= kMaxLength, op,
                 "length " + std::to_string(length) + ": at most " + std::to_string(kMaxLength) +
                     " cached tokens (the scores stay in shared memory)",
                 {{"k_cache", k_cache_TGDh}});
  const int64_t H = q_HDh.size(0), G = k_cache_TGDh.size(1), Dh = q_HDh.size(1);
  const size_t shared = static_cast<size_t>(length + Dh) * sizeof(float);
  const float scale = 1.0f / std::sqrt(static_cast<float>(Dh));
  with_float_type(q_HDh.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    attention_decode_kernel<T><<<static_cast<unsigned>(H), kThreads, shared, stream()>>>(
        static_cast<T*>(out_HDh.data), static_cast<const T*>(q_HDh.data), static_cast<const T*>(k_cache_TGDh.data),
        static_cast<const T*>(v_cache_TGDh.data), length, H, G, Dh, scale);
  });
  check_launch(op, {{"q", q_HDh}});
}

}  // namespace moe::cuda
