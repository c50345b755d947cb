// AdamW (decoupled weight decay) on the GPU, on F32 master weights and moments:
// one tensor (adamw_step) or a whole list in one launch (adamw_step_many).
// The math of cpu::adamw_step (PyTorch's single-tensor AdamW), in its order:
// g = grad * grad_scale; p *= 1 - lr*wd; m = b1 m + (1-b1) g;
// v = b2 v + (1-b2) g^2; p -= step_size * m / (sqrt(v) / sqrt(1-b2^t) + eps),
// step_size = lr / (1-b1^t), both bias corrections formed on the host in double
// exactly as the CPU does. Every operation is an explicitly rounded intrinsic
// (no fused multiply-add), so each step rounds as the CPU code does when the
// host compiler does not contract either.
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/dense_util.cuh"
#include "src/kernels/cuda/multi_tensor.cuh"

namespace moe::cuda {
namespace {

using namespace dense;

constexpr int kThreads = 256;
// adamw_step_many: blocks of one launch; past this each block takes several chunks.
constexpr int64_t kMaxManyBlocks = int64_t{1} << 20;
static_assert(multi_tensor::kChunk % kPack == 0, "adamw_many_kernel's packs start at chunk starts");

// What every element of one step shares (the decay factor is per tensor).
struct AdamWScalars {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, eps, grad_scale, step_size, bias_correction2_sqrt;
};

// The same expressions as cpu/adamw.cc, on the host.
AdamWScalars scalars_of(float lr, float beta1, float beta2, float eps, int64_t step, float grad_scale) {
  const double t = static_cast<double>(step);
  AdamWScalars s{};
  s.beta1 = beta1;
  s.beta2 = beta2;
  s.one_minus_beta1 = 1.0f - beta1;
  s.one_minus_beta2 = 1.0f - beta2;
  s.eps = eps;
  s.grad_scale = grad_scale;
  s.step_size = static_cast<float>(lr / (1.0 - std::pow(static_cast<double>(beta1), t)));
  s.bias_correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(beta2), t)));
  return s;
}

// One element: cpu::adamw_step's operations in its order, each rounded on its
// own; p, m and v are updated in place.
__device__ __forceinline__ void adamw_value(float& p, float grad, float& m, float& v, const AdamWScalars& s,
                                            float decay) {
  const float g = __fmul_rn(grad, s.grad_scale);
  p = __fmul_rn(p, decay);
  m = __fadd_rn(__fmul_rn(s.beta1, m), __fmul_rn(s.one_minus_beta1, g));
  v = __fadd_rn(__fmul_rn(s.beta2, v), __fmul_rn(__fmul_rn(s.one_minus_beta2, g), g));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), s.bias_correction2_sqrt), s.eps);
  p = __fsub_rn(p, __fdiv_rn(__fmul_rn(s.step_size, m), denom));
}

// Element i of one tensor; `compute` (may be null) gets the new value in bf16.
__device__ __forceinline__ void adamw_element(float* param, const float* grad, float* m, float* v,
                                              __nv_bfloat16* compute, int64_t i, const AdamWScalars& s, float decay) {
  float p = param[i], mi = m[i], vi = v[i];
  adamw_value(p, grad[i], mi, vi, s, decay);
  m[i] = mi;
  v[i] = vi;
  param[i] = p;
  if (compute) compute[i] = __float2bfloat16_rn(p);
}

// Pack i of one tensor (elements [8i, 8i + 8)), its arrays 16-byte aligned:
// the same operations per element as adamw_element, with param, grad, m and
// v moved in 16-byte words (AdamW is bound by those four streams).
__device__ __forceinline__ void adamw_pack(float* param, const float* grad, float* m, float* v, __nv_bfloat16* compute,
                                           int64_t i, const AdamWScalars& s, float decay) {
  float p[kPack], g[kPack], mv[kPack], vv[kPack];
  load_pack(param, i, p);
  load_pack(grad, i, g);
  load_pack(m, i, mv);
  load_pack(v, i, vv);
#pragma unroll
  for (int k = 0; k < kPack; ++k) adamw_value(p[k], g[k], mv[k], vv[k], s, decay);
  store_pack(m, i, mv);
  store_pack(v, i, vv);
  store_pack(param, i, p);
  if (compute) {
#pragma unroll
    for (int k = 0; k < kPack; ++k) compute[i * kPack + k] = __float2bfloat16_rn(p[k]);
  }
}

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWScalars s,
                             float decay) {
  for (int64_t i = global_index(); i < n; i += grid_stride()) adamw_element(param, grad, m, v, nullptr, i, s, decay);
}

// adamw_step_many: one entry per non-empty slot (multi_tensor.cuh).
struct AdamWEntry {
  float* param;
  const float* grad;
  float* m;
  float* v;
  __nv_bfloat16* compute;  // null: no bf16 copy
  int64_t n, first_chunk;
  float weight_decay;
  bool packed;  // param, grad, m and v 16-byte aligned: elements move kPack at a time

  // NaN never compares equal: such a list is re-uploaded each call, still correct.
  bool operator==(const AdamWEntry& o) const {
    return param == o.param && grad == o.grad && m == o.m && v == o.v && compute == o.compute && n == o.n &&
           first_chunk == o.first_chunk && weight_decay == o.weight_decay && packed == o.packed;
  }
};

// Each block updates the chunks blockIdx.x, + gridDim.x, ... of the list.
__global__ void __launch_bounds__(kThreads)
    adamw_many_kernel(const AdamWEntry* table, int64_t count, int64_t chunks, const AdamWScalars s, float lr) {
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const multi_tensor::ChunkRange r = multi_tensor::chunk_range(table, count, c);
    const AdamWEntry e = table[r.entry];
    // The host's float 1.0f - lr * wd, rounded twice as there (the table keeps
    // wd, not the decay: lr moves every step and the table then stays as it is).
    const float decay = __fsub_rn(1.0f, __fmul_rn(lr, e.weight_decay));
    // A chunk starts at a multiple of kChunk elements, so with aligned arrays
    // its packs are aligned too; a tensor's last < kPack elements go one by one.
    int64_t tail = r.begin;
    if (e.packed) {
      const int64_t packs = (r.end - r.begin) / kPack;
      for (int64_t q = threadIdx.x; q < packs; q += blockDim.x) {
        adamw_pack(e.param, e.grad, e.m, e.v, e.compute, r.begin / kPack + q, s, decay);
      }
      tail = r.begin + kPack * packs;
    }
    for (int64_t i = tail + threadIdx.x; i < r.end; i += blockDim.x) {
      adamw_element(e.param, e.grad, e.m, e.v, e.compute, i, s, decay);
    }
  }
}

}  // namespace

void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, float lr, float beta1,
                float beta2, float eps, float weight_decay, int64_t step, float grad_scale) {
  const char* op = "adamw_step";
  const auto args = {Arg{"param", param}, Arg{"grad", grad}, Arg{"m", m}, Arg{"v", v}};
  require_dtypes(
      param.dtype == DType::kF32 && grad.dtype == DType::kF32 && m.dtype == DType::kF32 && v.dtype == DType::kF32, op,
      args, "param, grad, m and v all f32");
  const int64_t n = param.numel();
  require_shapes(grad.numel() == n && m.numel() == n && v.numel() == n, op, "param, grad, m and v differ in size",
                 args);
  if (n == 0) return;
  const AdamWScalars s = scalars_of(lr, beta1, beta2, eps, step, grad_scale);
  const float decay = 1.0f - lr * weight_decay;  // as cpu/adamw.cc
  adamw_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(param.f32(), grad.f32(), m.f32(), v.f32(), n, s,
                                                                 decay);
  check_launch(op, args);
}

// One launch for the list. No host sync unless the list changed (multi_tensor.cuh).
void adamw_step_many(const std::vector<ops::AdamWSlot>& slots, float lr, float beta1, float beta2, float eps,
                     int64_t step, float grad_scale) {
  const char* op = "adamw_step_many";
  static multi_tensor::ChunkTable<AdamWEntry> table;  // process lifetime (multi_tensor.cuh)
  table.clear();
  for (size_t i = 0; i < slots.size(); ++i) {
    const ops::AdamWSlot& slot = slots[i];
    const int64_t n = slot.param.numel();
    using multi_tensor::f32_on_device;
    const bool copy_ok =
        slot.compute.data == nullptr ||
        (slot.compute.dtype == DType::kBF16 && slot.compute.device == Device::kCuda && slot.compute.numel() == n);
    const bool ok = f32_on_device(slot.param) && f32_on_device(slot.grad) && f32_on_device(slot.m) &&
                    f32_on_device(slot.v) && copy_ok && slot.grad.numel() == n && slot.m.numel() == n &&
                    slot.v.numel() == n;
    if (!ok) {  // the message is built only on failure: this loop runs every step
      using multi_tensor::placed;
      throw std::logic_error(std::string(op) + ": slot " + std::to_string(i) + " (param " + placed(slot.param) +
                             ", grad " + placed(slot.grad) + ", m " + placed(slot.m) + ", v " + placed(slot.v) +
                             "); wants f32 device tensors of one size, and an optional bf16 device copy");
    }
    table.add(
        {static_cast<float*>(slot.param.data), static_cast<const float*>(slot.grad.data),
         static_cast<float*>(slot.m.data), static_cast<float*>(slot.v.data),
         static_cast<__nv_bfloat16*>(slot.compute.data), n, 0, slot.weight_decay,
         aligned16(slot.param.data) && aligned16(slot.grad.data) && aligned16(slot.m.data) && aligned16(slot.v.data)});
  }
  if (table.count() == 0) return;
  const AdamWEntry* entries = table.upload(op);
  const AdamWScalars s = scalars_of(lr, beta1, beta2, eps, step, grad_scale);
  adamw_many_kernel<<<multi_tensor::blocks_for(table.chunks(), kMaxManyBlocks), kThreads, 0, stream()>>>(
      entries, table.count(), table.chunks(), s, lr);
  multi_tensor::check_list_launch(op, table.count(), table.chunks());
}

}  // namespace moe::cuda
