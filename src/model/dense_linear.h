// The GEMMs of the dense layers (attention's projections, a dense block's
// FFN), in one of two numerics: the activations' dtype (ops::matmul_*), or
// FP8 under train.mixed_precision = "fp8" (ops::fp8_matmul_*: E4M3 weights
// and activations, E5M2 gradients, current per-tensor scaling). Experts,
// shared experts, the router and the LM head keep the activations' dtype.
#pragma once

#include <cstdint>

#include "src/kernels/ops.h"
#include "src/model/params.h"

namespace moe {

enum class DenseGemm { kActivationDtype, kFp8 };

// out = x W^T.
void dense_forward(DenseGemm gemm, const Tensor& out_NO, const Tensor& x_NI, const Param& w);
// dx (+)= dout W, W's gradient += dout^T x; dx may be empty.
void dense_backward(DenseGemm gemm, const Tensor& dx_NI, Param& w, const Tensor& dout_NO, const Tensor& x_NI,
                    ops::GradInto dx_into = ops::GradInto::kAdd);
// Sizes what an N x I -> O product needs on the device before any graph is captured.
void reserve_dense(DenseGemm gemm, Device device, int64_t N, int64_t I, int64_t O);

}  // namespace moe
