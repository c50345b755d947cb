// Router on the GPU: scores, top-k choice and renormalised weights (one warp
// per token), and their gradient (one thread per token). The numbers follow
// src/kernels/cpu/router.cc operation for operation: scores in double rounded
// to float, ties to the lower expert index, the weight sum in double in slot
// order. Products and sums that the CPU rounds one at a time are written with
// __dmul_rn / __dadd_rn so nvcc does not fuse them.
// Legend: N tokens, E experts, K experts per token.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/moe_common.cuh"
#include "src/kernels/cuda/stream.h"

namespace moe::cuda {
namespace {

using namespace moe_detail;

constexpr int kWarpsPerBlock = 8;

// Warp n handles token n; lane l owns experts l, l + 32, ... (bit j of
// `taken` is expert l + 32 j). Top-k is K rounds of a warp arg-max over the
// experts not yet taken, ordered by (value desc, index asc): that is the
// CPU's insertion order, whose strict comparisons keep the lower index first
// on ties. Lane 0's result is broadcast each round, so every lane agrees even
// if a NaN makes the comparison inconsistent, and the K indices are always
// distinct experts in [0, E).
__global__ void router_forward_kernel(int32_t* topk_idx_NK, float* topk_w_NK, float* scores_NE, const float* logits_NE,
                                      const float* bias_E, int64_t N, int E, int K, bool sigmoid) {
  const int lane = threadIdx.x & 31;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;  // the whole warp leaves together
  const float* l_E = logits_NE + n * E;
  float* s_E = scores_NE + n * E;

  if (sigmoid) {
    for (int e = lane; e < E; e += 32) s_E[e] = static_cast<float>(1.0 / (1.0 + exp(-static_cast<double>(l_E[e]))));
  } else {
    float max = -INFINITY;
    for (int e = lane; e < E; e += 32) max = fmaxf(max, l_E[e]);
    max = warp_max(max);
    double sum = 0;
    for (int e = lane; e < E; e += 32) sum += exp(static_cast<double>(l_E[e]) - max);
    sum = warp_sum(sum);
    for (int e = lane; e < E; e += 32) s_E[e] = static_cast<float>(exp(static_cast<double>(l_E[e]) - max) / sum);
  }
  // Below, each lane reads back only the scores it wrote itself.
  const float* sel_bias = sigmoid ? bias_E : nullptr;  // the bias only steers sigmoid routing

  uint64_t taken = 0;
  int32_t my_idx = 0;  // lane k < K: the expert of slot k
  float my_score = 0;  // and its score
  double picked = 0;   // sum of the picked scores, slot by slot (every lane)
  for (int k = 0; k < K; ++k) {
    // This lane's best expert not yet taken (ascending e: strict > keeps the lower index).
    float best_v = 0, best_s = 0;
    int best_e = -1;
    for (int e = lane, j = 0; e < E; e += 32, ++j) {
      if (taken >> j & 1) continue;
      const float s = s_E[e];
      const float v = sel_bias ? s + sel_bias[e] : s;
      if (best_e < 0 || v > best_v) {
        best_v = v;
        best_s = s;
        best_e = e;
      }
    }
    // Arg-max over the warp by (value desc, index asc).
    float win_v = best_v;
    int win_e = best_e;
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float other_v = __shfl_xor_sync(kFullMask, win_v, offset);
      const int other_e = __shfl_xor_sync(kFullMask, win_e, offset);
      if (other_e >= 0 && (win_e < 0 || other_v > win_v || (other_v == win_v && other_e < win_e))) {
        win_v = other_v;
        win_e = other_e;
      }
    }
    win_e = __shfl_sync(kFullMask, win_e, 0);
    // The winner is its owner's local best, so the owner holds its score.
    const float win_s = __shfl_sync(kFullMask, best_s, win_e & 31);
    if ((win_e & 31) == lane) taken |= uint64_t{1} << (win_e >> 5);
    if (lane == k) {
      my_idx = win_e;
      my_score = win_s;
    }
    picked = __dadd_rn(picked, static_cast<double>(win_s));
  }
  if (lane < K) {
    topk_idx_NK[n * K + lane] = my_idx;
    topk_w_NK[n * K + lane] = static_cast<float>(static_cast<double>(my_score) / picked);
  }
}

// dlogits += w_k (g_k - <g, w>) [* (1 - s_k) for sigmoid] on the picked
// logits (derivation in src/kernels/cpu/router.cc). One thread per token; the
// K experts of a token are distinct, so no two threads touch one element.
__global__ void router_backward_kernel(float* dlogits_NE, const float* dtopk_w_NK, const int32_t* topk_idx_NK,
                                       const float* topk_w_NK, const float* scores_NE, int64_t N, int E, int K,
                                       bool sigmoid) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const float* g_K = dtopk_w_NK + n * K;
  const float* w_K = topk_w_NK + n * K;
  const int32_t* idx_K = topk_idx_NK + n * K;
  double gw = 0;
  for (int k = 0; k < K; ++k) gw = __dadd_rn(gw, __dmul_rn(static_cast<double>(g_K[k]), static_cast<double>(w_K[k])));
  for (int k = 0; k < K; ++k) {
    const int e = idx_K[k];
    if (e < 0 || e >= E) continue;  // not a routing index: nothing to add (the CPU would read out of bounds)
    double d = __dmul_rn(static_cast<double>(w_K[k]), __dsub_rn(static_cast<double>(g_K[k]), gw));
    if (sigmoid) d = __dmul_rn(d, __dsub_rn(1.0, static_cast<double>(scores_NE[n * E + e])));
    float& dl = dlogits_NE[n * E + e];
    dl = __fadd_rn(dl, static_cast<float>(d));
  }
}

void check_router_shapes(const char* op, const Tensor& idx_NK, const Tensor& w_NK, const Tensor& scores_NE, int64_t N,
                         int64_t E, int64_t K) {
  expect(E >= 1 && E <= kMaxExperts, op,
         "E = " + std::to_string(E) + " experts; the CUDA router supports 1 to " + std::to_string(kMaxExperts));
  expect(K >= 1 && K <= kMaxTopK && K <= E, op,
         "K = " + std::to_string(K) + " must be in [1, min(E, " + std::to_string(kMaxTopK) +
             ")], E = " + std::to_string(E));
  expect(rows_of(idx_NK) == N && rows_of(w_NK) == N && w_NK.size(-1) == K && scores_NE.numel() == N * E, op,
         "topk_idx " + idx_NK.shape_string() + ", topk_w " + w_NK.shape_string() + ", scores " +
             scores_NE.shape_string() + " for N = " + std::to_string(N) + ", E = " + std::to_string(E));
}

// logits += z * softplus(noise_logits), z standard normal from the counter noise.
__global__ void router_noise_forward_kernel(float* logits, const float* noise_logits, int64_t n,
                                            const int32_t* key_words, uint64_t noise_stream) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint64_t key = noise::stream_key(key_words, noise_stream), first = noise::first_index(key_words, n);
  const float x = noise_logits[i];
  const float softplus = fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x)));
  logits[i] += noise::value({noise::Kind::kNormal, 0, 0}, key, first + static_cast<uint64_t>(i)) * softplus;
}

// dnoise_logits = dlogits * z * sigmoid(noise_logits) (softplus' = sigmoid).
__global__ void router_noise_backward_kernel(float* dnoise_logits, const float* dlogits, const float* noise_logits,
                                             int64_t n, const int32_t* key_words, uint64_t noise_stream) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint64_t key = noise::stream_key(key_words, noise_stream), first = noise::first_index(key_words, n);
  const float sigmoid = 1.0f / (1.0f + expf(-noise_logits[i]));
  dnoise_logits[i] =
      dlogits[i] * noise::value({noise::Kind::kNormal, 0, 0}, key, first + static_cast<uint64_t>(i)) * sigmoid;
}

}  // namespace

void router_forward(const Tensor& topk_idx_NK, const Tensor& topk_w_NK, const Tensor& scores_NE,
                    const Tensor& logits_NE, const Tensor& bias_E, RouterKind kind) {
  const char* op = "cuda::router_forward";
  expect_dtype(topk_idx_NK, DType::kI32, op, "topk_idx");
  expect_dtype(topk_w_NK, DType::kF32, op, "topk_w");
  expect_dtype(scores_NE, DType::kF32, op, "scores");
  expect_dtype(logits_NE, DType::kF32, op, "logits");
  const int64_t N = rows_of(logits_NE), E = logits_NE.size(-1), K = topk_idx_NK.size(-1);
  check_router_shapes(op, topk_idx_NK, topk_w_NK, scores_NE, N, E, K);
  const bool sigmoid = kind == RouterKind::kSigmoidTopK;
  const float* bias = nullptr;
  if (sigmoid && bias_E.data) {
    expect_dtype(bias_E, DType::kF32, op, "bias");
    expect(bias_E.numel() == E, op, "bias " + bias_E.shape_string() + " for E = " + std::to_string(E));
    bias = static_cast<const float*>(bias_E.data);
  }
  if (N == 0) return;
  router_forward_kernel<<<ceil_div(N, kWarpsPerBlock), kWarpsPerBlock * 32, 0, stream()>>>(
      topk_idx_NK.i32(), topk_w_NK.f32(), scores_NE.f32(), logits_NE.f32(), bias, N, static_cast<int>(E),
      static_cast<int>(K), sigmoid);
  check_launch(op, "logits " + logits_NE.shape_string() + ", K = " + std::to_string(K));
}

void router_noise_forward(const Tensor& logits_NE, const Tensor& noise_logits_NE, const Tensor& key_4,
                          uint64_t noise_stream) {
  const char* op = "cuda::router_noise_forward";
  expect_dtype(logits_NE, DType::kF32, op, "logits");
  expect_dtype(noise_logits_NE, DType::kF32, op, "noise_logits");
  expect_dtype(key_4, DType::kI32, op, "key");
  expect(logits_NE.numel() == noise_logits_NE.numel() && key_4.numel() == noise::kKeyWords, op,
         "logits " + logits_NE.shape_string() + ", noise_logits " + noise_logits_NE.shape_string() + ", key " +
             key_4.shape_string());
  const int64_t n = logits_NE.numel();
  if (n == 0) return;
  constexpr int kThreads = 256;
  router_noise_forward_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream()>>>(logits_NE.f32(), noise_logits_NE.f32(),
                                                                                n, key_4.i32(), noise_stream);
  check_launch(op, "logits " + logits_NE.shape_string());
}

void router_noise_backward(const Tensor& dnoise_logits_NE, const Tensor& dlogits_NE, const Tensor& noise_logits_NE,
                           const Tensor& key_4, uint64_t noise_stream) {
  const char* op = "cuda::router_noise_backward";
  expect_dtype(dnoise_logits_NE, DType::kF32, op, "dnoise_logits");
  expect_dtype(dlogits_NE, DType::kF32, op, "dlogits");
  expect_dtype(noise_logits_NE, DType::kF32, op, "noise_logits");
  expect_dtype(key_4, DType::kI32, op, "key");
  expect(dnoise_logits_NE.numel() == dlogits_NE.numel() && dlogits_NE.numel() == noise_logits_NE.numel() &&
             key_4.numel() == noise::kKeyWords,
         op, "dnoise_logits " + dnoise_logits_NE.shape_string() + ", dlogits " + dlogits_NE.shape_string());
  const int64_t n = dlogits_NE.numel();
  if (n == 0) return;
  constexpr int kThreads = 256;
  router_noise_backward_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream()>>>(
      dnoise_logits_NE.f32(), dlogits_NE.f32(), noise_logits_NE.f32(), n, key_4.i32(), noise_stream);
  check_launch(op, "dlogits " + dlogits_NE.shape_string());
}

void router_backward(const Tensor& dlogits_NE, const Tensor& dtopk_w_NK, const Tensor& topk_idx_NK,
                     const Tensor& topk_w_NK, const Tensor& scores_NE, RouterKind kind) {
  const char* op = "cuda::router_backward";
  expect_dtype(dlogits_NE, DType::kF32, op, "dlogits");
  expect_dtype(dtopk_w_NK, DType::kF32, op, "dtopk_w");
  expect_dtype(topk_idx_NK, DType::kI32, op, "topk_idx");
  expect_dtype(topk_w_NK, DType::kF32, op, "topk_w");
  expect_dtype(scores_NE, DType::kF32, op, "scores");
  const int64_t N = rows_of(scores_NE), E = scores_NE.size(-1), K = topk_idx_NK.size(-1);
  check_router_shapes(op, topk_idx_NK, topk_w_NK, scores_NE, N, E, K);
  expect(dlogits_NE.numel() == N * E && dtopk_w_NK.numel() == N * K, op,
         "dlogits " + dlogits_NE.shape_string() + ", dtopk_w " + dtopk_w_NK.shape_string() + " for scores " +
             scores_NE.shape_string() + ", K = " + std::to_string(K));
  if (N == 0) return;
  constexpr int kThreads = 256;
  router_backward_kernel<<<ceil_div(N, kThreads), kThreads, 0, stream()>>>(
      dlogits_NE.f32(), dtopk_w_NK.f32(), topk_idx_NK.i32(), topk_w_NK.f32(), scores_NE.f32(), N, static_cast<int>(E),
      static_cast<int>(K), kind == RouterKind::kSigmoidTopK);
  check_launch(op, "scores " + scores_NE.shape_string() + ", K = " + std::to_string(K));
}

}  // namespace moe::cuda
