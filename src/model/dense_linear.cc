#include "src/model/dense_linear.h"

namespace moe {

void dense_forward(DenseGemm gemm, const Tensor& out_NO, const Tensor& x_NI, const Param& w) {
  if (gemm == DenseGemm::kFp8) return ops::fp8_matmul_forward(out_NO, x_NI, w.value);
  ops::matmul_forward(out_NO, x_NI, w.value);
}

void dense_backward(DenseGemm gemm, const Tensor& dx_NI, Param& w, const Tensor& dout_NO, const Tensor& x_NI,
                    ops::GradInto dx_into) {
  if (gemm == DenseGemm::kFp8) return ops::fp8_matmul_backward(dx_NI, w.grad, dout_NO, x_NI, w.value, dx_into);
  ops::matmul_backward(dx_NI, w.grad, dout_NO, x_NI, w.value, dx_into);
}

void reserve_dense(DenseGemm gemm, Device device, int64_t N, int64_t I, int64_t O) {
  if (gemm == DenseGemm::kFp8) ops::reserve_fp8_matmul(device, N, I, O);
}

}  // namespace moe
