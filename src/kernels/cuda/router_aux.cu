// Auxiliary router losses on the GPU (load balance, z-loss, sequence balance)
// and their gradient w.r.t. the logits; the formulas and their derivation are
// in src/kernels/cpu/router_aux.cc, and every quantity is computed in double
// as there. Three passes, no host sync:
//   1. counts: pairs per (sequence, expert) and per expert, from topk_idx
//      (integer atomics: the result does not depend on their order);
//   2. tokens: one warp per token; the gradient needs only the counts, so it
//      is written here, while the per-expert sums of the normalised scores and
//      the lse^2 of each block of tokens go to a partial-sum buffer;
//   3. finalize: one block reduces the partials in a fixed order and writes
//      the three losses to a device tensor (the MoE layer reads them once
//      per step, with the expert counts).
// Every sum is in a fixed order, so a run repeats bit for bit.
// Legend: B sequences of T tokens, N = B*T, E experts, K experts per token,
// C token chunks per sequence (one block of pass 2 each).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/device_scratch.h"
#include "src/kernels/cuda/moe_common.cuh"
#include "src/kernels/cuda/stream.h"

namespace moe::cuda {
namespace {

using namespace moe_detail;

constexpr int kCountThreads = 256;
// One block; its threads only sum partials, so a few warps suffice. At 1024
// threads the kernel would need more registers than a block has.
constexpr int kFinalizeThreads = 256;
constexpr int64_t kSharedDoubles = 6144;  // 48 KiB of dynamic shared memory, the no-opt-in limit

// Pass 1. Block (b, chunk) counts a range of the pairs of sequence b in shared
// memory, then adds its non-zero bins to the sequence's and the global counts.
__global__ void aux_count_kernel(int32_t* counts_E, int32_t* seq_counts_BE, const int32_t* topk_idx_NK, int64_t T,
                                 int E, int K, int chunks, int64_t pairs_per_block) {
  extern __shared__ int32_t hist_E[];
  const int64_t b = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  for (int e = threadIdx.x; e < E; e += blockDim.x) hist_E[e] = 0;
  __syncthreads();
  const int64_t seq_end = (b + 1) * T * K;
  const int64_t begin = b * T * K + chunk * pairs_per_block;
  const int64_t end = begin + pairs_per_block < seq_end ? begin + pairs_per_block : seq_end;
  for (int64_t p = begin + threadIdx.x; p < end; p += blockDim.x) {
    const int32_t e = topk_idx_NK[p];
    if (e >= 0 && e < E) atomicAdd(&hist_E[e], 1);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    const int32_t c = hist_E[e];
    if (c == 0) continue;
    atomicAdd(&seq_counts_BE[b * E + e], c);
    atomicAdd(&counts_E[e], c);
  }
}

// Pass 2. Block (b, c) handles tokens [c*Tc, (c+1)*Tc) of sequence b, warp w
// every W-th of them; lane l owns experts l, l + 32, ... and so alone touches
// its entries of the warp's accumulator row acc[w][.] (no atomics).
// Shared: a_E[E] (dLoss/dq, the same for every token of the sequence),
// acc[W][E], z[W].
__global__ void aux_token_kernel(float* daux_logits_NE, double* partial_P_BCE, double* partial_z_BC,
                                 const float* logits_NE, const float* scores_NE, const int32_t* counts_E,
                                 const int32_t* seq_counts_BE, int64_t B, int64_t T, int E_, int K_, int chunks,
                                 int64_t tokens_per_chunk, bool sigmoid, float w_lb, float w_z, float w_seq,
                                 float grad_scale) {
  extern __shared__ double shared[];
  const int W = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t b = blockIdx.x / chunks, c = blockIdx.x % chunks;
  const int64_t E = E_, K = K_, N = B * T;  // int64 as in the CPU code, so the expressions below round alike
  double* a_E = shared;
  double* acc_E = shared + E + warp * E;
  double* z_W = shared + E + W * E;

  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    const int64_t count = counts_E[e], seq_count = seq_counts_BE[b * E + e];
    a_E[e] = w_lb * E * count / static_cast<double>(N * K) / N +
             w_seq * E * seq_count / static_cast<double>(T * K) / (T * B);
  }
  for (int64_t e = lane; e < E; e += 32) acc_E[e] = 0;
  __syncthreads();

  double z = 0;  // this warp's sum of lse^2 (lane 0's copy is the one kept)
  const int64_t t_begin = c * tokens_per_chunk;
  const int64_t t_end = t_begin + tokens_per_chunk < T ? t_begin + tokens_per_chunk : T;
  for (int64_t t = t_begin + warp; t < t_end; t += W) {
    const int64_t n = b * T + t;
    const float* l_E = logits_NE + n * E;
    const float* s_E = scores_NE + n * E;
    double row_sum = 1.0;  // softmax scores are already normalised
    if (sigmoid) {
      double sum = 0;
      for (int64_t e = lane; e < E; e += 32) sum += s_E[e];
      row_sum = warp_sum(sum);
    }
    double max = -INFINITY;
    for (int64_t e = lane; e < E; e += 32) max = fmax(max, static_cast<double>(l_E[e]));
    max = warp_max(max);
    double sum_exp = 0;
    for (int64_t e = lane; e < E; e += 32) sum_exp += exp(l_E[e] - max);
    const double lse = max + log(warp_sum(sum_exp));
    z += lse * lse;

    double qa = 0;
    for (int64_t e = lane; e < E; e += 32) qa += s_E[e] / row_sum * a_E[e];
    qa = warp_sum(qa);
    const double dz = 2.0 * w_z * lse / N;
    for (int64_t e = lane; e < E; e += 32) {
      const double q = s_E[e] / row_sum;
      acc_E[e] += q;
      if (!daux_logits_NE) continue;
      const double dq = sigmoid ? q * (1.0 - s_E[e]) * (a_E[e] - qa) : q * (a_E[e] - qa);
      daux_logits_NE[n * E + e] = static_cast<float>(grad_scale * (dq + dz * exp(l_E[e] - lse)));
    }
  }
  if (lane == 0) z_W[warp] = z;
  __syncthreads();

  double* out_E = partial_P_BCE + (b * chunks + c) * E;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    double sum = 0;
    for (int w = 0; w < W; ++w) sum += shared[E + w * E + e];
    out_E[e] = sum;
  }
  if (threadIdx.x == 0) {
    double sum = 0;
    for (int w = 0; w < W; ++w) sum += z_W[w];
    partial_z_BC[b * chunks + c] = sum;
  }
}

// Pass 3 (one block of W warps). Warp w takes experts w, w + W, ...; lane l takes the
// sequences l, l + 32, ... of that expert, so each lane forms whole
// per-sequence sums P_be before the warp adds the lanes up.
//   load_balance     = E sum_e f_e P_e            (f_e = counts_e / (N K), P_e = mean_n q_ne)
//   sequence_balance = E/B sum_b sum_e f_be P_be
//   z_loss           = mean_n lse_n^2
__global__ void __launch_bounds__(kFinalizeThreads)
    aux_finalize_kernel(float* aux_3, const double* partial_P_BCE, const double* partial_z_BC, const int32_t* counts_E,
                        const int32_t* seq_counts_BE, int64_t B, int64_t T, int E_, int K_, int chunks) {
  __shared__ double scratch[32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  const int64_t E = E_, K = K_, N = B * T;
  double lb = 0, seq = 0;  // lane 0 of each warp sums its experts' terms
  for (int64_t e = warp; e < E; e += warps) {
    double P = 0, seq_e = 0;
    for (int64_t b = lane; b < B; b += 32) {
      double P_be = 0;
      for (int c = 0; c < chunks; ++c) P_be += partial_P_BCE[(b * chunks + c) * E + e];
      P += P_be;
      seq_e += seq_counts_BE[b * E + e] / static_cast<double>(T * K) * (P_be / T);
    }
    P = warp_sum(P);
    seq_e = warp_sum(seq_e);
    lb += counts_E[e] / static_cast<double>(N * K) * (P / N);
    seq += seq_e;
  }
  if (lane != 0) lb = seq = 0;  // every lane holds the same values; count them once
  lb = block_sum(lb, scratch);
  seq = block_sum(seq, scratch);
  double z = 0;
  for (int64_t i = threadIdx.x; i < B * chunks; i += blockDim.x) z += partial_z_BC[i];
  z = block_sum(z, scratch);
  if (threadIdx.x == 0) {
    // Rounded to float once, from the double sums, as the CPU does.
    aux_3[0] = static_cast<float>(E * lb);
    aux_3[1] = static_cast<float>(z / N);
    aux_3[2] = static_cast<float>(E * seq / B);
  }
}

DeviceScratch& workspace() {
  static DeviceScratch scratch("workspace");
  return scratch;
}

// Pass 2's grid: about 256 blocks, at least ~32 tokens each.
int64_t token_chunks(int64_t B, int64_t T) {
  return std::max<int64_t>(1, std::min<int64_t>((256 + B - 1) / B, (T + 31) / 32));
}

// Workspace: doubles first (partial_P [B*C*E], partial_z [B*C]), then ints (counts [E], seq [B*E]).
size_t workspace_bytes(int64_t B, int64_t T, int64_t E) {
  const int64_t chunks = token_chunks(B, T);
  return static_cast<size_t>(B * chunks * E + B * chunks) * sizeof(double) +
         static_cast<size_t>(E + B * E) * sizeof(int32_t);
}

}  // namespace

void router_aux_losses(const Tensor& aux_3, const Tensor& daux_logits_NE, const Tensor& logits_NE,
                       const Tensor& scores_NE, const Tensor& topk_idx_NK, int64_t T, RouterKind kind, float w_lb,
                       float w_z, float w_seq, float grad_scale) {
  const char* op = "cuda::router_aux_losses";
  expect_dtype(aux_3, DType::kF32, op, "aux");
  expect(aux_3.numel() == 3, op, "aux " + aux_3.shape_string() + " must hold 3 values");
  expect_dtype(logits_NE, DType::kF32, op, "logits");
  expect_dtype(scores_NE, DType::kF32, op, "scores");
  expect_dtype(topk_idx_NK, DType::kI32, op, "topk_idx");
  const int64_t N = rows_of(logits_NE), E = logits_NE.size(-1), K = topk_idx_NK.size(-1);
  const std::string shapes =
      "logits " + logits_NE.shape_string() + ", topk_idx " + topk_idx_NK.shape_string() + ", T = " + std::to_string(T);
  expect(E >= 1 && E <= kMaxExperts && K >= 1 && K <= E, op,
         shapes + ": needs 1 <= K <= E <= " + std::to_string(kMaxExperts));
  expect(rows_of(topk_idx_NK) == N && scores_NE.numel() == N * E && T > 0 && N % T == 0, op, shapes);
  expect(N * K < (int64_t{1} << 31), op, shapes + ": more than 2^31 pairs");
  if (daux_logits_NE.data) {
    expect_dtype(daux_logits_NE, DType::kF32, op, "daux_logits");
    expect(daux_logits_NE.numel() == N * E, op, "daux_logits " + daux_logits_NE.shape_string() + ", " + shapes);
  }
  cudaStream_t s = stream();
  if (N == 0) {  // what the CPU reference gives: 0/0 for the means, 0 for the empty mean over sequences
    static const float empty[3] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::quiet_NaN(),
                                   0.0f};
    check(cudaMemcpyAsync(aux_3.data, empty, sizeof empty, cudaMemcpyHostToDevice, s), op);
    return;
  }
  const int64_t B = N / T;
  const bool sigmoid = kind == RouterKind::kSigmoidTopK;

  const int64_t chunks = token_chunks(B, T);
  const int64_t tokens_per_chunk = (T + chunks - 1) / chunks;
  const int64_t W = std::clamp<int64_t>((kSharedDoubles - E) / (E + 1), 1, 8);
  // Pass 1's grid: up to 64 blocks per sequence, at least 2048 pairs each.
  const int64_t count_chunks = std::clamp<int64_t>((T * K + 2047) / 2048, 1, 64);
  const int64_t pairs_per_block = (T * K + count_chunks - 1) / count_chunks;
  expect(B * std::max(chunks, count_chunks) < (int64_t{1} << 31), op, shapes + ": too many sequences");

  const size_t n_ints = static_cast<size_t>(E + B * E);
  char* ws = static_cast<char*>(workspace().get(workspace_bytes(B, T, E), op));
  double* partial_P = reinterpret_cast<double*>(ws);
  double* partial_z = partial_P + B * chunks * E;
  int32_t* counts = reinterpret_cast<int32_t*>(partial_z + B * chunks);
  int32_t* seq_counts = counts + E;

  check(cudaMemsetAsync(counts, 0, n_ints * sizeof(int32_t), s), std::string(op) + " memset, " + shapes);
  aux_count_kernel<<<static_cast<unsigned>(B * count_chunks), kCountThreads, E * sizeof(int32_t), s>>>(
      counts, seq_counts, topk_idx_NK.i32(), T, static_cast<int>(E), static_cast<int>(K),
      static_cast<int>(count_chunks), pairs_per_block);
  check_launch(op, "(counts) " + shapes);
  aux_token_kernel<<<static_cast<unsigned>(B * chunks), static_cast<unsigned>(W * 32),
                     static_cast<size_t>((E + W * E + W) * sizeof(double)), s>>>(
      daux_logits_NE.data ? daux_logits_NE.f32() : nullptr, partial_P, partial_z, logits_NE.f32(), scores_NE.f32(),
      counts, seq_counts, B, T, static_cast<int>(E), static_cast<int>(K), static_cast<int>(chunks), tokens_per_chunk,
      sigmoid, w_lb, w_z, w_seq, grad_scale);
  check_launch(op, "(tokens) " + shapes);
  aux_finalize_kernel<<<1, kFinalizeThreads, 0, s>>>(aux_3.f32(), partial_P, partial_z, counts, seq_counts, B, T,
                                                     static_cast<int>(E), static_cast<int>(K),
                                                     static_cast<int>(chunks));
  check_launch(op, "(finalize) " + shapes);
}

void reserve_router_aux_losses(int64_t N, int64_t T, int64_t E) {
  if (N > 0 && T > 0) workspace().get(workspace_bytes(N / T, T, E), "reserve_router_aux_losses");
}

}  // namespace moe::cuda
