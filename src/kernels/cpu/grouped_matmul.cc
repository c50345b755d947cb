// Grouped matmul: each expert's block of rows times that expert's weight, one
// OpenBLAS GEMM per expert. Legend: M rows (grouped by expert), E experts,
// I in features, O out features; W[e] is [I, O] row-major, out = x W[e].
#include <cblas.h>

#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

void grouped_matmul_forward(float* out_MO, const float* x_MI, const float* w_EIO, const int32_t* offsets_E1, int64_t E,
                            int64_t I, int64_t O) {
  for (int64_t e = 0; e < E; ++e) {
    const int64_t begin = offsets_E1[e], rows = offsets_E1[e + 1] - begin;
    if (rows == 0) continue;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(O),
                static_cast<int>(I), 1.0f, x_MI + begin * I, static_cast<int>(I), w_EIO + e * I * O,
                static_cast<int>(O), 0.0f, out_MO + begin * O, static_cast<int>(O));
  }
}

// dx += dout W[e]^T (unless dx is null) and dW[e] += x^T dout, per expert
// (beta = 1 accumulates).
void grouped_matmul_backward(float* dx_MI, float* dw_EIO, const float* dout_MO, const float* x_MI, const float* w_EIO,
                             const int32_t* offsets_E1, int64_t E, int64_t I, int64_t O) {
  for (int64_t e = 0; e < E; ++e) {
    const int64_t begin = offsets_E1[e], rows = offsets_E1[e + 1] - begin;
    if (rows == 0) continue;
    const float* dout = dout_MO + begin * O;
    const float* x = x_MI + begin * I;
    if (dx_MI != nullptr) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(I),
                  static_cast<int>(O), 1.0f, dout, static_cast<int>(O), w_EIO + e * I * O, static_cast<int>(O), 1.0f,
                  dx_MI + begin * I, static_cast<int>(I));
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(I), static_cast<int>(O),
                static_cast<int>(rows), 1.0f, x, static_cast<int>(I), dout, static_cast<int>(O), 1.0f,
                dw_EIO + e * I * O, static_cast<int>(O));
  }
}

}  // namespace moe::cpu
