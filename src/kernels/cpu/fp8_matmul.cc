// The FP8 linear layer's reference numbers (cpu_ops.h): quantise-dequantise
// each operand with current per-tensor scaling (src/core/fp8.h), then the
// fp32 GEMMs of matmul.cc. Dequantised values are exact in fp32, so this is
// what a GPU's FP8 GEMM computes, up to the order of its sums.
#include <cmath>
#include <vector>

#include "src/core/fp8.h"
#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {
namespace {

std::vector<float> quantized(const float* x, int64_t n, fp8::Format f) {
  std::vector<float> q(static_cast<size_t>(n));
  fp8_quantize_dequantize(q.data(), x, n, static_cast<int>(f));
  return q;
}

}  // namespace

void fp8_quantize_dequantize(float* out, const float* x, int64_t n, int format) {
  const auto f = static_cast<fp8::Format>(format);
  float amax = 0.0f;  // fmaxf skips NaN, as the GPU's amax does
  for (int64_t i = 0; i < n; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  const int k = fp8::scale_exponent(amax, f);
  for (int64_t i = 0; i < n; ++i) out[i] = fp8::quantize_dequantize(x[i], k, f);
}

void fp8_matmul_forward(float* out_NO, const float* x_NI, const float* w_OI, int64_t N, int64_t I, int64_t O) {
  const std::vector<float> x = quantized(x_NI, N * I, fp8::Format::kE4M3);
  const std::vector<float> w = quantized(w_OI, O * I, fp8::Format::kE4M3);
  matmul_forward(out_NO, x.data(), w.data(), N, I, O);
}

void fp8_matmul_backward(float* dx_NI, float* dw_OI, const float* dout_NO, const float* x_NI, const float* w_OI,
                         int64_t N, int64_t I, int64_t O) {
  const std::vector<float> dout = quantized(dout_NO, N * O, fp8::Format::kE5M2);
  const std::vector<float> x = quantized(x_NI, N * I, fp8::Format::kE4M3);
  const std::vector<float> w = quantized(w_OI, O * I, fp8::Format::kE4M3);
  matmul_backward(dx_NI, dw_OI, dout.data(), x.data(), w.data(), N, I, O);
}

}  // namespace moe::cpu
