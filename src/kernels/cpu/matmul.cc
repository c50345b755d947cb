// Linear layer as in nn.Linear: out = x W^T. Legend: N rows, I in, O out.
// All three products are single OpenBLAS GEMMs on row-major buffers.
#include <cblas.h>

#include <algorithm>

#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

void matmul_forward(float* out_NO, const float* x_NI, const float* w_OI, int64_t N, int64_t I, int64_t O) {
  if (N == 0 || O == 0) return;
  // BLAS rejects a leading dimension of 0, and an empty sum is 0.
  if (I == 0) {
    std::fill(out_NO, out_NO + N * O, 0.0f);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, O, I, 1.0f, x_NI, I, w_OI, I, 0.0f, out_NO, O);
}

// beta = 1 makes both GEMMs accumulate into the existing gradients.
void matmul_backward(float* dx_NI, float* dw_OI, const float* dout_NO, const float* x_NI, const float* w_OI, int64_t N,
                     int64_t I, int64_t O) {
  if (N == 0 || I == 0 || O == 0) return;
  if (dx_NI != nullptr) {
    // dx[N, I] += dout[N, O] W[O, I]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, I, O, 1.0f, dout_NO, O, w_OI, I, 1.0f, dx_NI, I);
  }
  // dW[O, I] += dout^T[O, N] x[N, I]
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, I, N, 1.0f, dout_NO, O, x_NI, I, 1.0f, dw_OI, I);
}

}  // namespace moe::cpu
