// The CUDA backend of a build without CUDA: ops.cc calls it only for device
// tensors, which such a build cannot make, so every entry is a bug if reached.
#include <stdexcept>
#include <string>

#include "src/kernels/cuda/cuda_ops.h"

namespace moe::cuda {
namespace {

[[noreturn]] void no_cuda(const char* op) {
  throw std::logic_error(std::string(op) + ": device tensors, but this build has no CUDA backend");
}

}  // namespace

void embedding_forward(const Tensor&, const Tensor&, const Tensor&) { no_cuda("embedding_forward"); }

void embedding_backward(const Tensor&, const Tensor&, const Tensor&) { no_cuda("embedding_backward"); }

void rmsnorm_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, float) { no_cuda("rmsnorm_forward"); }

void add_rmsnorm_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                         float) {
  no_cuda("add_rmsnorm_forward");
}
void rmsnorm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                      const Tensor&) {
  no_cuda("rmsnorm_backward");
}

void reserve_rmsnorm_backward(int64_t, int64_t) { no_cuda("reserve_rmsnorm_backward"); }

void rope_forward(const Tensor&, float, int64_t) { no_cuda("rope_forward"); }

void rope_backward(const Tensor&, float) { no_cuda("rope_backward"); }

void swiglu_forward(const Tensor&, const Tensor&, const Tensor&) { no_cuda("swiglu_forward"); }

void swiglu_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
  no_cuda("swiglu_backward");
}

void cast(const Tensor&, const Tensor&) { no_cuda("cast"); }

void add(const Tensor&, const Tensor&, const Tensor&) { no_cuda("add"); }

void scale_inplace(const Tensor&, float) { no_cuda("scale_inplace"); }
void router_noise_forward(const Tensor&, const Tensor&, const Tensor&, uint64_t) { no_cuda("router_noise_forward"); }
void router_noise_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, uint64_t) {
  no_cuda("router_noise_backward");
}
void multiply_noise_rows(const Tensor&, const Tensor&, const Tensor&, int64_t, const Tensor&, uint64_t,
                         const noise::Distribution&) {
  no_cuda("multiply_noise_rows");
}
void noise_row_ids(const Tensor&, const Tensor&, const Tensor&) { no_cuda("noise_row_ids"); }
void multiply_noise(const Tensor&, const Tensor&, const Tensor&, uint64_t, const noise::Distribution&) {
  no_cuda("multiply_noise");
}

double sum_squares(const Tensor&) { no_cuda("sum_squares"); }

void adamw_step(const Tensor&, const Tensor&, const Tensor&, const Tensor&, float, float, float, float, float, int64_t,
                float) {
  no_cuda("adamw_step");
}

double sum_squares_many(const std::vector<Tensor>&) { no_cuda("sum_squares_many"); }

void adamw_step_many(const std::vector<ops::AdamWSlot>&, float, float, float, float, int64_t, float) {
  no_cuda("adamw_step_many");
}

void cross_entropy_forward_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, float) {
  no_cuda("cross_entropy_forward_backward");
}

void router_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, RouterKind) {
  no_cuda("router_forward");
}

void router_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, RouterKind) {
  no_cuda("router_backward");
}

void router_aux_losses(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, RouterKind,
                       float, float, float, float) {
  no_cuda("router_aux_losses");
}

void reserve_router_aux_losses(int64_t, int64_t, int64_t) { no_cuda("reserve_router_aux_losses"); }
void fp8_matmul_forward(const Tensor&, const Tensor&, const Tensor&) { no_cuda("fp8_matmul_forward"); }
void fp8_matmul_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool) {
  no_cuda("fp8_matmul_backward");
}
void reserve_fp8_matmul(int64_t, int64_t, int64_t) { no_cuda("reserve_fp8_matmul"); }

void moe_plan(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, const Tensor&) {
  no_cuda("moe_plan");
}

void moe_count_experts(const Tensor&, const Tensor&, const Tensor&, const Tensor&) { no_cuda("moe_count_experts"); }

void moe_permute(const Tensor&, const Tensor&, const Tensor&) { no_cuda("moe_permute"); }

void moe_permute_backward(const Tensor&, const Tensor&, const Tensor&) { no_cuda("moe_permute_backward"); }

void gather_rows(const Tensor&, const Tensor&, const Tensor&) { no_cuda("gather_rows"); }

void moe_unpermute(const Tensor&, const Tensor&, const Tensor&, const Tensor&) { no_cuda("moe_unpermute"); }

void moe_unpermute_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
  no_cuda("moe_unpermute_backward");
}

void attention_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
  no_cuda("attention_forward");
}

void attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                        const Tensor&, const Tensor&, const Tensor&) {
  no_cuda("attention_backward");
}

void reserve_attention(int64_t, int64_t, int64_t) { no_cuda("reserve_attention"); }
void attention_decode(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t) {
  no_cuda("attention_decode");
}

void matmul_forward(const Tensor&, const Tensor&, const Tensor&) { no_cuda("matmul_forward"); }

void matmul_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool) {
  no_cuda("matmul_backward");
}

void grouped_matmul_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
  no_cuda("grouped_matmul_forward");
}

void grouped_matmul_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
  no_cuda("grouped_matmul_backward");
}

}  // namespace moe::cuda
