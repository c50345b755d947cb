// AdamW (decoupled weight decay) on the GPU, on F32 master weights and moments.
// The math of cpu::adamw_step (PyTorch's single-tensor AdamW), in its order:
// g = grad * grad_scale; p *= 1 - lr*wd; m = b1 m + (1-b1) g;
// v = b2 v + (1-b2) g^2; p -= step_size * m / (sqrt(v) / sqrt(1-b2^t) + eps),
// step_size = lr / (1-b1^t), both bias corrections formed on the host in double
// exactly as the CPU does. Every operation is an explicitly rounded intrinsic
// (no fused multiply-add), so each step rounds as the CPU code does when the
// host compiler does not contract either.
#include <cmath>

#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/dense_util.cuh"

namespace moe::cuda {
namespace {

using namespace dense;

constexpr int kThreads = 256;

struct AdamWScalars {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, eps, grad_scale, decay, step_size, bias_correction2_sqrt;
};

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWScalars s) {
  for (int64_t i = global_index(); i < n; i += grid_stride()) {
    const float g = __fmul_rn(grad[i], s.grad_scale);
    float p = __fmul_rn(param[i], s.decay);
    const float mi = __fadd_rn(__fmul_rn(s.beta1, m[i]), __fmul_rn(s.one_minus_beta1, g));
    const float vi = __fadd_rn(__fmul_rn(s.beta2, v[i]), __fmul_rn(__fmul_rn(s.one_minus_beta2, g), g));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bias_correction2_sqrt), s.eps);
    p = __fsub_rn(p, __fdiv_rn(__fmul_rn(s.step_size, mi), denom));
    m[i] = mi;
    v[i] = vi;
    param[i] = p;
  }
}

}  // namespace

void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, float lr, float beta1,
                float beta2, float eps, float weight_decay, int64_t step, float grad_scale) {
  const char* op = "adamw_step";
  const auto args = {Arg{"param", param}, Arg{"grad", grad}, Arg{"m", m}, Arg{"v", v}};
  require_dtypes(param.dtype == DType::kF32 && grad.dtype == DType::kF32 && m.dtype == DType::kF32 &&
                     v.dtype == DType::kF32,
                 op, args, "param, grad, m and v all f32");
  const int64_t n = param.numel();
  require_shapes(grad.numel() == n && m.numel() == n && v.numel() == n, op, "param, grad, m and v differ in size",
                 args);
  if (n == 0) return;
  // Host-side scalars: the same expressions as cpu/adamw.cc.
  const double t = static_cast<double>(step);
  AdamWScalars s{};
  s.beta1 = beta1;
  s.beta2 = beta2;
  s.one_minus_beta1 = 1.0f - beta1;
  s.one_minus_beta2 = 1.0f - beta2;
  s.eps = eps;
  s.grad_scale = grad_scale;
  s.decay = 1.0f - lr * weight_decay;
  s.step_size = static_cast<float>(lr / (1.0 - std::pow(static_cast<double>(beta1), t)));
  s.bias_correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(beta2), t)));
  adamw_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(param.f32(), grad.f32(), m.f32(), v.f32(), n, s);
  check_launch(op, args);
}

}  // namespace moe::cuda
