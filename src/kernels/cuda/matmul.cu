// Linear layer on the GPU through cuBLASLt: out = x W^T, W [O, I] as in
// nn.Linear. Legend: N rows, I in features, O out features.
//
// Row-major to column-major: cuBLAS sees a row-major [R, C] buffer as the
// column-major C x R matrix (its transpose) with leading dimension C. So each
// row-major product P = X Y is computed as the column-major P^T = Y^T X^T,
// with no copies:
//   forward  out^T [O x N] = op_T(W as I x O) * (x as I x N)          m=O n=N k=I
//   dx       dx^T  [I x N] += (W as I x O) * (dout as O x N)           m=I n=N k=O
//   dw       dw^T  [I x O] += (x as I x N) * op_T(dout as O x N)       m=I n=O k=N
//
// Types: A and B share one dtype (BF16, or F32 when training in fp32); the
// GEMM computes in fp32 (CUBLAS_COMPUTE_32F: true fp32 products for F32
// inputs, no TF32) and writes D in the dtype of the output tensor. BF16
// inputs may write a BF16 or F32 output; F32 inputs write F32. dw is always
// F32 (fp32 master gradients): A/B = BF16 with C/D = F32 is one of cuBLASLt's
// supported combinations for CUBLAS_COMPUTE_32F.
//
// Plans, workspace and graph capture: cublaslt_gemm.h.
//
// Performance ideas, to be measured on a GPU: CUBLAS_COMPUTE_32F_FAST_TF32 for F32
// inputs (a config switch; tests would need a TF32 tolerance); ask the
// heuristic for several algos and time them once per plan; fuse bias or
// activation epilogues (CUBLASLT_EPILOGUE_*) where the model has them.
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "src/kernels/cuda/cublaslt_gemm.h"
#include "src/kernels/cuda/cuda_check.h"
#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/stream.h"

namespace moe::cuda {
namespace {

// All dims but the last (also when the last is 0).
int64_t rows_of(const Tensor& t) {
  int64_t rows = 1;
  for (int d = 0; d + 1 < t.ndim; ++d) rows *= t.shape[d];
  return rows;
}

std::string describe(const Tensor& t) { return std::string(dtype_name(t.dtype)) + t.shape_string(); }

// Input dtypes all equal (BF16 or F32); an output is F32, or BF16 when the inputs are.
template <typename Describe>
void check_types(const char* op, const Describe& shapes, DType in, std::initializer_list<const Tensor*> inputs,
                 std::initializer_list<const Tensor*> outputs) {
  bool ok = in == DType::kBF16 || in == DType::kF32;
  for (const Tensor* t : inputs) ok = ok && t->dtype == in;
  for (const Tensor* t : outputs) {
    ok = ok && (t->dtype == DType::kF32 || (t->dtype == DType::kBF16 && in == DType::kBF16));
  }
  if (!ok) {
    throw std::logic_error(std::string(op) + ": unsupported dtypes " + shapes() +
                           " (inputs all bf16 or all f32; outputs f32, or bf16 for bf16 inputs)");
  }
}

void check_device(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts) {
    if (t->data != nullptr && t->device != Device::kCuda) {
      throw std::logic_error(std::string(op) + ": host tensor " + t->shape_string() + " passed to the CUDA backend");
    }
  }
}

}  // namespace

void matmul_forward(const Tensor& out_NO, const Tensor& x_NI, const Tensor& w_OI) {
  const int64_t N = rows_of(x_NI), I = w_OI.size(1), O = w_OI.size(0);
  const auto shapes = [&] { return describe(out_NO) + " = " + describe(x_NI) + " x " + describe(w_OI) + "^T"; };
  check_device("matmul_forward", {&out_NO, &x_NI, &w_OI});
  check_types("matmul_forward", shapes, x_NI.dtype, {&w_OI}, {&out_NO});
  if (N == 0 || O == 0) return;
  if (I == 0) {  // an empty sum: cuBLASLt rejects k = 0
    const cudaError_t st = cudaMemsetAsync(out_NO.data, 0, static_cast<size_t>(out_NO.bytes()), stream());
    if (st != cudaSuccess) check(st, "matmul_forward " + shapes() + " (zero fill)");
    return;
  }
  const cudaDataType_t in = blas_type(x_NI.dtype);
  lt_gemm([&] { return "matmul_forward " + shapes(); }, /*transa=*/true, /*transb=*/false, O, N, I, {w_OI.data, in, I},
          {x_NI.data, in, I}, out_NO.data, O, blas_type(out_NO.dtype), /*accumulate=*/false);
}

void matmul_backward(const Tensor& dx_NI, const Tensor& dw_OI, const Tensor& dout_NO, const Tensor& x_NI,
                     const Tensor& w_OI, bool accumulate_dx) {
  const int64_t N = rows_of(x_NI), I = w_OI.size(1), O = w_OI.size(0);
  const auto shapes = [&] {
    return "dx " + (dx_NI.data ? describe(dx_NI) : std::string("(none)")) + ", dw " + describe(dw_OI) + ", dout " +
           describe(dout_NO) + ", x " + describe(x_NI) + ", w " + describe(w_OI);
  };
  check_device("matmul_backward", {&dx_NI, &dw_OI, &dout_NO, &x_NI, &w_OI});
  if (dx_NI.data != nullptr) {
    check_types("matmul_backward", shapes, x_NI.dtype, {&dout_NO, &w_OI}, {&dx_NI});
  } else {
    check_types("matmul_backward", shapes, x_NI.dtype, {&dout_NO, &w_OI}, {});
  }
  if (dw_OI.dtype != DType::kF32) {
    throw std::logic_error("matmul_backward: dw must be f32 (fp32 master gradients): " + shapes());
  }
  if (N == 0 || I == 0 || O == 0) return;
  const cudaDataType_t in = blas_type(x_NI.dtype);
  if (dx_NI.data != nullptr) {
    lt_gemm(
        [&] {
          return (accumulate_dx ? "matmul_backward (dx += dout W) " : "matmul_backward (dx = dout W) ") + shapes();
        },
        false, false, I, N, O, {w_OI.data, in, I}, {dout_NO.data, in, O}, dx_NI.data, I, blas_type(dx_NI.dtype),
        accumulate_dx);
  }
  lt_gemm([&] { return "matmul_backward (dw += dout^T x) " + shapes(); }, false, true, I, O, N, {x_NI.data, in, I},
          {dout_NO.data, in, O}, dw_OI.data, I, CUDA_R_32F, /*accumulate=*/true);
}

}  // namespace moe::cuda
