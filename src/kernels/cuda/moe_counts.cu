// moe_count_experts: the step's per-expert token counts, accumulated on the device a micro-batch
// at a time, so the routing never has to reach the host inside a step (the
// trainer reads the totals once, after the last micro-batch). Integer adds:
// the totals do not depend on the order of the atomics.
// Legend: N tokens, K slots per token, E experts, P = N*K pairs.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/moe_common.cuh"
#include "src/kernels/cuda/stream.h"

namespace moe::cuda {
namespace {

using namespace moe_detail;

constexpr int kCountThreads = 256;

// Each block counts its grid-stride share of the pairs in shared memory, then
// adds its E totals to routed; block 0 also adds the kept rows per expert
// (offsets[e+1] - offsets[e]). Indices outside [0, E) are skipped, as in the
// other MoE kernels.
__global__ void count_experts_kernel(int32_t* routed_E, int32_t* kept_E, const int32_t* topk_idx, int64_t P,
                                     const int32_t* offsets_E1, int E) {
  extern __shared__ int32_t local[];
  for (int e = threadIdx.x; e < E; e += blockDim.x) local[e] = 0;
  __syncthreads();
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < P;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t e = topk_idx[p];
    if (e >= 0 && e < E) atomicAdd(&local[e], 1);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    if (local[e] != 0) atomicAdd(&routed_E[e], local[e]);
    if (blockIdx.x == 0) kept_E[e] += offsets_E1[e + 1] - offsets_E1[e];
  }
}

}  // namespace

void moe_count_experts(const Tensor& routed_E, const Tensor& kept_E, const Tensor& topk_idx_NK,
                       const Tensor& offsets_E1) {
  const char* op = "cuda::moe_count_experts";
  for (const Tensor* t : {&routed_E, &kept_E, &topk_idx_NK, &offsets_E1}) expect_dtype(*t, DType::kI32, op, "counts");
  const int64_t E = routed_E.numel(), P = topk_idx_NK.numel();
  const std::string shapes = "routed " + routed_E.shape_string() + ", kept " + kept_E.shape_string() + ", topk_idx " +
                             topk_idx_NK.shape_string() + ", offsets " + offsets_E1.shape_string();
  expect(E >= 1 && E <= kMaxExperts && kept_E.numel() == E && offsets_E1.numel() == E + 1, op, shapes);
  // Enough blocks to keep the SMs busy on large P; at least one, for the kept counts.
  const unsigned blocks = std::max(1u, std::min(ceil_div(P, kCountThreads * 8), 1024u));
  count_experts_kernel<<<blocks, kCountThreads, E * sizeof(int32_t), stream()>>>(
      routed_E.i32(), kept_E.i32(), topk_idx_NK.i32(), P, offsets_E1.i32(), static_cast<int>(E));
  check_launch(op, shapes);
}

}  // namespace moe::cuda
