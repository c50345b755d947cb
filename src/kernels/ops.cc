// Dispatch from device-neutral ops to a backend. Shape mismatches are bugs in
// our code (the model plans every buffer), so they throw std::logic_error
// naming the op and the shapes.
#include "src/kernels/ops.h"

#include "src/core/bf16.h"
#include "src/core/tensor_pool.h"
#include "src/kernels/op_profile.h"

#include <cstring>
#include <stdexcept>
#include <string>

#if MOE_TRAIN_HAS_CUDA
#include "src/kernels/cuda/cuda_ops.h"
// In an op: `if (on_device(...)) CUDA_BACKEND(cuda::op(args));`
#define CUDA_BACKEND(call) return call
#else
#define CUDA_BACKEND(call) throw std::logic_error("device tensors, but this build has no CUDA backend")
#endif

namespace moe::ops {
namespace {

// Where an op runs: false for host tensors (the CPU reference below), true
// for device tensors (the CUDA backend). Mixing them is a bug in the caller.
template <typename... Ts>
bool on_device(const char* op, const Ts&... ts) {
  const bool any_device = ((ts.data != nullptr && ts.device == Device::kCuda) || ...);
  const bool any_host = ((ts.data != nullptr && ts.device == Device::kCpu) || ...);
  if (any_device && any_host) throw std::logic_error(std::string(op) + ": host and device tensors mixed");
  return any_device;
}

// on_device for the ops over a list of tensors: add() each one, then ask.
class Placement {
 public:
  void add(const Tensor& t) {
    if (t.data == nullptr) return;
    (t.device == Device::kCuda ? device_ : host_) = true;
  }
  bool on_device(const char* op) const {
    if (device_ && host_) throw std::logic_error(std::string(op) + ": host and device tensors mixed");
    return device_;
  }

 private:
  bool device_ = false, host_ = false;
};

// The ops the CUDA backend does not have yet.
template <typename... Ts>
void on_cpu(const char* op, const Ts&... ts) {
  if (on_device(op, ts...)) throw std::logic_error(std::string(op) + ": not in the CUDA backend yet");
}

void expect(bool ok, const char* op, const std::string& what) {
  if (!ok) throw std::logic_error(std::string(op) + ": " + what);
}

// All dims but the last (also when the last is 0).
int64_t rows_of(const Tensor& t) {
  int64_t rows = 1;
  for (int d = 0; d + 1 < t.ndim; ++d) rows *= t.shape[d];
  return rows;
}

// Host tensors may also be bf16: the mixed-precision model run on the CPU,
// which tests its dtype plumbing (compute copies, bf16 activations, casts,
// collectives) without a GPU. The CPU reference computes in fp32, so a bf16
// argument is widened into a scratch copy for the call and, when the op
// writes it, rounded back afterwards (to nearest even): what the CUDA kernels
// do per element, reading bf16, computing in fp32, rounding what they write.
// f32 tensors are passed through untouched; scratch exists only for bf16.
class HostF32 {
 public:
  HostF32(const Tensor& t, bool written) : t_(t), written_(written) {
    if (t.data == nullptr || t.dtype != DType::kBF16) return;
    scratch_.resize(static_cast<size_t>(t.numel()));
    const auto* h = static_cast<const uint16_t*>(t.data);
    for (size_t i = 0; i < scratch_.size(); ++i) scratch_[i] = bf16_to_f32(h[i]);
  }
  ~HostF32() {
    if (!written_ || scratch_.empty()) return;
    auto* h = static_cast<uint16_t*>(t_.data);
    for (size_t i = 0; i < scratch_.size(); ++i) h[i] = f32_to_bf16(scratch_[i]);
  }
  HostF32(const HostF32&) = delete;
  HostF32& operator=(const HostF32&) = delete;
  // nullptr for an empty (optional) tensor; checks the dtype otherwise.
  operator float*() {
    if (t_.data == nullptr) return nullptr;
    return t_.dtype == DType::kBF16 ? scratch_.data() : t_.f32();
  }

 private:
  const Tensor& t_;
  bool written_;
  std::vector<float> scratch_;
};

// An argument the op reads / writes (or accumulates into).
HostF32 read_f32(const Tensor& t) { return HostF32(t, false); }
HostF32 write_f32(const Tensor& t) { return HostF32(t, true); }

}  // namespace

void embedding_forward(const Tensor& out_ND, const Tensor& tokens_N, const Tensor& table_VD) {
  const bool device = on_device("embedding_forward", out_ND, tokens_N, table_VD);
  const OpTimer timer("embedding_forward", device);
  expect(out_ND.size(-1) == table_VD.size(-1), "embedding_forward", out_ND.shape_string() + " vs table " +
                                                                        table_VD.shape_string());
  if (device) CUDA_BACKEND(cuda::embedding_forward(out_ND, tokens_N, table_VD));
  cpu::embedding_forward(write_f32(out_ND), tokens_N.i32(), read_f32(table_VD), tokens_N.numel(), table_VD.size(-1));
}

void embedding_backward(const Tensor& dtable_VD, const Tensor& dout_ND, const Tensor& tokens_N) {
  const bool device = on_device("embedding_backward", dtable_VD, dout_ND, tokens_N);
  const OpTimer timer("embedding_backward", device);
  if (device) {
    CUDA_BACKEND(cuda::embedding_backward(dtable_VD, dout_ND, tokens_N));
  }
  cpu::embedding_backward(write_f32(dtable_VD), read_f32(dout_ND), tokens_N.i32(), tokens_N.numel(), dtable_VD.size(-1));
}

void rmsnorm_forward(const Tensor& out_ND, const Tensor& rstd_N, const Tensor& x_ND, const Tensor& w_D, float eps) {
  const bool device = on_device("rmsnorm_forward", out_ND, rstd_N, x_ND, w_D);
  const OpTimer timer("rmsnorm_forward", device);
  expect(x_ND.size(-1) == w_D.numel(), "rmsnorm_forward", x_ND.shape_string() + " vs w " + w_D.shape_string());
  if (device) CUDA_BACKEND(cuda::rmsnorm_forward(out_ND, rstd_N, x_ND, w_D, eps));
  cpu::rmsnorm_forward(write_f32(out_ND), write_f32(rstd_N), read_f32(x_ND), read_f32(w_D), rows_of(x_ND), w_D.numel(), eps);
}

void rmsnorm_backward(const Tensor& dx_ND, const Tensor& dw_D, const Tensor& dout_ND, const Tensor& x_ND,
                      const Tensor& w_D, const Tensor& rstd_N) {
  const bool device = on_device("rmsnorm_backward", dx_ND, dw_D, dout_ND, x_ND, w_D, rstd_N);
  const OpTimer timer("rmsnorm_backward", device);
  if (device) {
    CUDA_BACKEND(cuda::rmsnorm_backward(dx_ND, dw_D, dout_ND, x_ND, w_D, rstd_N));
  }
  cpu::rmsnorm_backward(write_f32(dx_ND), write_f32(dw_D), read_f32(dout_ND), read_f32(x_ND), read_f32(w_D), read_f32(rstd_N), rows_of(x_ND),
                        w_D.numel());
}

void matmul_forward(const Tensor& out_NO, const Tensor& x_NI, const Tensor& w_OI) {
  const bool device = on_device("matmul_forward", out_NO, x_NI, w_OI);
  const OpTimer timer("matmul_forward", device);
  const bool ok = w_OI.ndim == 2 && x_NI.size(-1) == w_OI.size(1) && out_NO.size(-1) == w_OI.size(0) &&
                  rows_of(out_NO) == rows_of(x_NI);
  expect(ok, "matmul_forward",
         ok ? "" : out_NO.shape_string() + " = " + x_NI.shape_string() + " x " + w_OI.shape_string() + "^T");
  if (device) CUDA_BACKEND(cuda::matmul_forward(out_NO, x_NI, w_OI));
  cpu::matmul_forward(write_f32(out_NO), read_f32(x_NI), read_f32(w_OI), rows_of(x_NI), w_OI.size(1), w_OI.size(0));
}

void matmul_backward(const Tensor& dx_NI, const Tensor& dw_OI, const Tensor& dout_NO, const Tensor& x_NI,
                     const Tensor& w_OI) {
  const bool device = on_device("matmul_backward", dx_NI, dw_OI, dout_NO, x_NI, w_OI);
  const OpTimer timer("matmul_backward", device);
  const bool ok = w_OI.ndim == 2 && x_NI.size(-1) == w_OI.size(1) && dout_NO.size(-1) == w_OI.size(0) &&
                  rows_of(dout_NO) == rows_of(x_NI) && dw_OI.numel() == w_OI.numel() &&
                  (dx_NI.data == nullptr || (dx_NI.size(-1) == x_NI.size(-1) && rows_of(dx_NI) == rows_of(x_NI)));
  expect(ok, "matmul_backward",
         ok ? "" : "dx " + dx_NI.shape_string() + ", dw " + dw_OI.shape_string() + ", dout " +
                       dout_NO.shape_string() + ", x " + x_NI.shape_string() + ", w " + w_OI.shape_string());
  if (device) CUDA_BACKEND(cuda::matmul_backward(dx_NI, dw_OI, dout_NO, x_NI, w_OI));
  cpu::matmul_backward(write_f32(dx_NI), write_f32(dw_OI), read_f32(dout_NO), read_f32(x_NI), read_f32(w_OI), rows_of(x_NI),
                       w_OI.size(1), w_OI.size(0));
}

void rope_forward(const Tensor& x_BTHDh, float theta) {
  const bool device = on_device("rope_forward", x_BTHDh);
  const OpTimer timer("rope_forward", device);
  expect(x_BTHDh.ndim == 4, "rope_forward", "x must be [B, T, heads, Dh], is " + x_BTHDh.shape_string());
  if (device) CUDA_BACKEND(cuda::rope_forward(x_BTHDh, theta));
  cpu::rope_forward(write_f32(x_BTHDh), x_BTHDh.size(0) * x_BTHDh.size(1), x_BTHDh.size(1), x_BTHDh.size(2),
                    x_BTHDh.size(3), theta);
}

void rope_backward(const Tensor& dx_BTHDh, float theta) {
  const bool device = on_device("rope_backward", dx_BTHDh);
  const OpTimer timer("rope_backward", device);
  expect(dx_BTHDh.ndim == 4, "rope_backward", "dx must be [B, T, heads, Dh], is " + dx_BTHDh.shape_string());
  if (device) CUDA_BACKEND(cuda::rope_backward(dx_BTHDh, theta));
  cpu::rope_backward(write_f32(dx_BTHDh), dx_BTHDh.size(0) * dx_BTHDh.size(1), dx_BTHDh.size(1), dx_BTHDh.size(2),
                     dx_BTHDh.size(3), theta);
}

void attention_forward(const Tensor& out, const Tensor& lse_BHT, const Tensor& q, const Tensor& k, const Tensor& v) {
  expect(q.ndim == 4 && k.ndim == 4 && k.size(2) > 0 && q.size(2) % k.size(2) == 0, "attention_forward",
         "q " + q.shape_string() + ", k " + k.shape_string());
  const bool device = on_device("attention_forward", out, lse_BHT, q, k, v);
  const OpTimer timer("attention_forward", device);
  if (device) {
    CUDA_BACKEND(cuda::attention_forward(out, lse_BHT, q, k, v));
  }
  cpu::attention_forward(write_f32(out), write_f32(lse_BHT), read_f32(q), read_f32(k), read_f32(v), q.size(0), q.size(1), q.size(2),
                         k.size(2), q.size(3));
}

void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout, const Tensor& q,
                        const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse_BHT) {
  const bool device = on_device("attention_backward", dq, dk, dv, dout, q, k, v, out, lse_BHT);
  const OpTimer timer("attention_backward", device);
  if (device) {
    CUDA_BACKEND(cuda::attention_backward(dq, dk, dv, dout, q, k, v, out, lse_BHT));
  }
  cpu::attention_backward(write_f32(dq), write_f32(dk), write_f32(dv), read_f32(dout), read_f32(q), read_f32(k), read_f32(v), read_f32(out),
                          read_f32(lse_BHT), q.size(0), q.size(1), q.size(2), k.size(2), q.size(3));
}

void swiglu_forward(const Tensor& out, const Tensor& a, const Tensor& b) {
  const bool device = on_device("swiglu_forward", out, a, b);
  const OpTimer timer("swiglu_forward", device);
  expect(a.numel() == b.numel() && out.numel() == a.numel(), "swiglu_forward", "a, b and out differ in size");
  if (device) CUDA_BACKEND(cuda::swiglu_forward(out, a, b));
  cpu::swiglu_forward(write_f32(out), read_f32(a), read_f32(b), a.numel());
}

void swiglu_backward(const Tensor& da, const Tensor& db, const Tensor& dout, const Tensor& a, const Tensor& b) {
  const bool device = on_device("swiglu_backward", da, db, dout, a, b);
  const OpTimer timer("swiglu_backward", device);
  if (device) CUDA_BACKEND(cuda::swiglu_backward(da, db, dout, a, b));
  cpu::swiglu_backward(write_f32(da), write_f32(db), read_f32(dout), read_f32(a), read_f32(b), a.numel());
}

void cross_entropy_forward_backward(const Tensor& loss_n, const Tensor& dlogits_nV, const Tensor& logits_nV,
                                    const Tensor& targets_n, float grad_scale) {
  const bool device = on_device("cross_entropy_forward_backward", loss_n, dlogits_nV, logits_nV, targets_n);
  const OpTimer timer("cross_entropy_forward_backward", device);
  expect(rows_of(logits_nV) == targets_n.numel(), "cross_entropy_forward_backward",
         "logits " + logits_nV.shape_string() + " vs targets " + targets_n.shape_string());
  if (device) CUDA_BACKEND(cuda::cross_entropy_forward_backward(loss_n, dlogits_nV, logits_nV, targets_n, grad_scale));
  cpu::cross_entropy_forward_backward(write_f32(loss_n), write_f32(dlogits_nV), read_f32(logits_nV), targets_n.i32(),
                                      targets_n.numel(), logits_nV.size(-1), grad_scale);
}

void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamW& h,
                int64_t step, float grad_scale) {
  const bool device = on_device("adamw_step", param, grad, m, v);
  const OpTimer timer("adamw_step", device);
  if (device) {
    CUDA_BACKEND(cuda::adamw_step(param, grad, m, v, h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, step, grad_scale));
  }
  cpu::adamw_step(write_f32(param), read_f32(grad), write_f32(m), write_f32(v), param.numel(), h.lr, h.beta1, h.beta2, h.eps,
                  h.weight_decay, step, grad_scale);
}

double sum_squares(const Tensor& x) {
  // Device tensors: a host sync (see cuda::sum_squares).
  const bool device = on_device("sum_squares", x);
  const OpTimer timer("sum_squares", device);
  if (device) CUDA_BACKEND(cuda::sum_squares(x));
  return cpu::sum_squares(read_f32(x), x.numel());
}

void cast(const Tensor& dst, const Tensor& src) {
  const bool device = on_device("cast", dst, src);
  const OpTimer timer("cast", device);
  expect(dst.numel() == src.numel(), "cast", dst.shape_string() + " <- " + src.shape_string());
  if (device) CUDA_BACKEND(cuda::cast(dst, src));
  const int64_t n = src.numel();
  if (dst.dtype == src.dtype) {
    copy_tensor(dst, src);
  } else if (dst.dtype == DType::kBF16 && src.dtype == DType::kF32) {
    auto* out = static_cast<uint16_t*>(dst.data);
    const float* in = src.f32();
    for (int64_t i = 0; i < n; ++i) out[i] = f32_to_bf16(in[i]);
  } else if (dst.dtype == DType::kF32 && src.dtype == DType::kBF16) {
    float* out = dst.f32();
    const auto* in = static_cast<const uint16_t*>(src.data);
    for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(in[i]);
  } else {
    expect(false, "cast", std::string("no conversion ") + dtype_name(src.dtype) + " -> " + dtype_name(dst.dtype));
  }
}

void add_inplace(const Tensor& y, const Tensor& x) {
  const bool device = on_device("add_inplace", y, x);
  const OpTimer timer("add_inplace", device);
  expect(y.numel() == x.numel(), "add_inplace", y.shape_string() + " += " + x.shape_string());
  if (device) CUDA_BACKEND(cuda::add_inplace(y, x));
  cpu::add_inplace(write_f32(y), read_f32(x), y.numel());
}

void scale_inplace(const Tensor& x, float factor) {
  const bool device = on_device("scale_inplace", x);
  const OpTimer timer("scale_inplace", device);
  if (device) CUDA_BACKEND(cuda::scale_inplace(x, factor));
  cpu::scale_inplace(write_f32(x), x.numel(), factor);
}

double sum_squares_many(const std::vector<Tensor>& xs) {
  const char* op = "sum_squares_many";
  Placement where;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    // A tensor with elements but no data (e.g. Tensor{}, which has numel 1) is a caller's bug.
    if (x.dtype != DType::kF32 || (x.data == nullptr && x.numel() > 0)) {
      expect(false, op, "tensor " + std::to_string(i) + " " + x.shape_string() + " " + dtype_name(x.dtype) +
                            (x.data ? "" : " without data") + "; wants f32, with data unless empty");
    }
    where.add(x);
  }
  const bool device = where.on_device(op);
  const OpTimer timer(op, device);
  // Device tensors: one reduction over the whole list, one host sync (cuda_ops.h).
  if (device) CUDA_BACKEND(cuda::sum_squares_many(xs));
  // The same additions, in the same order, as summing sum_squares(x) in a loop
  // (the grad norm of the CPU path does not move by a bit).
  double sum = 0;
  for (const Tensor& x : xs) sum += cpu::sum_squares(x.f32(), x.numel());
  return sum;
}

void adamw_step_many(const std::vector<AdamWSlot>& slots, const AdamWShared& h, int64_t step, float grad_scale) {
  const char* op = "adamw_step_many";
  Placement where;
  for (size_t i = 0; i < slots.size(); ++i) {
    const AdamWSlot& s = slots[i];
    const int64_t n = s.param.numel();
    const bool f32 = s.param.dtype == DType::kF32 && s.grad.dtype == DType::kF32 && s.m.dtype == DType::kF32 &&
                     s.v.dtype == DType::kF32;
    const bool copy_ok = s.compute.data == nullptr || (s.compute.dtype == DType::kBF16 && s.compute.numel() == n);
    const bool ok = f32 && copy_ok && s.grad.numel() == n && s.m.numel() == n && s.v.numel() == n &&
                    (n == 0 || (s.param.data && s.grad.data && s.m.data && s.v.data));
    if (!ok) {
      auto text = [](const char* name, const Tensor& t) {
        return std::string(name) + " " + t.shape_string() + " " + dtype_name(t.dtype) + (t.data ? "" : " without data");
      };
      expect(false, op, "slot " + std::to_string(i) + ": " + text("param", s.param) + ", " + text("grad", s.grad) +
                            ", " + text("m", s.m) + ", " + text("v", s.v) + ", " + text("compute", s.compute) +
                            "; wants f32 tensors of one size (and an optional bf16 copy)");
    }
    where.add(s.param);
    where.add(s.grad);
    where.add(s.m);
    where.add(s.v);
    where.add(s.compute);
  }
  const bool device = where.on_device(op);
  const OpTimer timer(op, device);
  // Device tensors: one launch for the whole list (cuda_ops.h).
  if (device) CUDA_BACKEND(cuda::adamw_step_many(slots, h.lr, h.beta1, h.beta2, h.eps, step, grad_scale));
  for (const AdamWSlot& s : slots) {
    cpu::adamw_step(s.param.f32(), s.grad.f32(), s.m.f32(), s.v.f32(), s.param.numel(), h.lr, h.beta1, h.beta2, h.eps,
                    s.weight_decay, step, grad_scale);
    if (s.compute.data) cast(s.compute, s.param);
  }
}

void router_forward(const Tensor& topk_idx_NK, const Tensor& topk_w_NK, const Tensor& scores_NE,
                    const Tensor& logits_NE, const Tensor& bias_E, RouterKind kind) {
  expect(rows_of(topk_idx_NK) == rows_of(logits_NE) && topk_w_NK.numel() == topk_idx_NK.numel() &&
             scores_NE.numel() == logits_NE.numel(),
         "router_forward", "topk_idx " + topk_idx_NK.shape_string() + ", topk_w " + topk_w_NK.shape_string() +
                               ", scores " + scores_NE.shape_string() + ", logits " + logits_NE.shape_string());
  const bool device = on_device("router_forward", topk_idx_NK, topk_w_NK, scores_NE, logits_NE, bias_E);
  const OpTimer timer("router_forward", device);
  if (device)
    CUDA_BACKEND(cuda::router_forward(topk_idx_NK, topk_w_NK, scores_NE, logits_NE, bias_E, kind));
  cpu::router_forward(topk_idx_NK.i32(), write_f32(topk_w_NK), write_f32(scores_NE), read_f32(logits_NE), read_f32(bias_E),
                      rows_of(logits_NE), logits_NE.size(-1), topk_idx_NK.size(-1), kind);
}

void router_backward(const Tensor& dlogits_NE, const Tensor& dtopk_w_NK, const Tensor& topk_idx_NK,
                     const Tensor& topk_w_NK, const Tensor& scores_NE, RouterKind kind) {
  expect(dlogits_NE.numel() == scores_NE.numel() && dtopk_w_NK.numel() == topk_idx_NK.numel() &&
             topk_w_NK.numel() == topk_idx_NK.numel() && rows_of(topk_idx_NK) == rows_of(scores_NE),
         "router_backward", "dlogits " + dlogits_NE.shape_string() + ", dtopk_w " + dtopk_w_NK.shape_string() +
                                ", topk_idx " + topk_idx_NK.shape_string() + ", scores " + scores_NE.shape_string());
  const bool device = on_device("router_backward", dlogits_NE, dtopk_w_NK, topk_idx_NK, topk_w_NK, scores_NE);
  const OpTimer timer("router_backward", device);
  if (device)
    CUDA_BACKEND(cuda::router_backward(dlogits_NE, dtopk_w_NK, topk_idx_NK, topk_w_NK, scores_NE, kind));
  cpu::router_backward(write_f32(dlogits_NE), read_f32(dtopk_w_NK), topk_idx_NK.i32(), read_f32(topk_w_NK), read_f32(scores_NE),
                       rows_of(scores_NE), scores_NE.size(-1), topk_idx_NK.size(-1), kind);
}

void router_aux_losses(const Tensor& aux_3, const Tensor& daux_logits_NE, const Tensor& logits_NE,
                       const Tensor& scores_NE, const Tensor& topk_idx_NK, int64_t T, RouterKind kind, float w_lb,
                       float w_z, float w_seq, float grad_scale) {
  const int64_t N = rows_of(logits_NE);
  expect(T > 0 && N % T == 0, "router_aux_losses", "token count " + std::to_string(N) + " is not a multiple of T");
  expect(aux_3.numel() == 3, "router_aux_losses", "aux " + aux_3.shape_string() + " must hold 3 values");
  const bool device = on_device("router_aux_losses", aux_3, daux_logits_NE, logits_NE, scores_NE, topk_idx_NK);
  const OpTimer timer("router_aux_losses", device);
  if (device) {
    CUDA_BACKEND(cuda::router_aux_losses(aux_3, daux_logits_NE, logits_NE, scores_NE, topk_idx_NK, T, kind, w_lb, w_z,
                                         w_seq, grad_scale));
  }
  const cpu::RouterAux aux =
      cpu::router_aux_losses(write_f32(daux_logits_NE), read_f32(logits_NE), read_f32(scores_NE), topk_idx_NK.i32(),
                             N / T, T, logits_NE.size(-1), topk_idx_NK.size(-1), kind, w_lb, w_z, w_seq, grad_scale);
  float* values = aux_3.f32();
  values[0] = static_cast<float>(aux.load_balance);
  values[1] = static_cast<float>(aux.z_loss);
  values[2] = static_cast<float>(aux.sequence_balance);
}

void moe_plan(const Tensor& offsets_E1, const Tensor& row_pair_M, const Tensor& pair_row_NK,
              const Tensor& topk_idx_NK, int64_t capacity) {
  const int64_t K = topk_idx_NK.size(-1), N = rows_of(topk_idx_NK), E = offsets_E1.numel() - 1;
  expect(row_pair_M.numel() >= N * K, "moe_plan", "row_pair buffer " + row_pair_M.shape_string() + " < N*K");
  expect(pair_row_NK.numel() == N * K, "moe_plan",
         "pair_row " + pair_row_NK.shape_string() + " vs topk_idx " + topk_idx_NK.shape_string());
  const bool device = on_device("moe_plan", offsets_E1, row_pair_M, pair_row_NK, topk_idx_NK);
  const OpTimer timer("moe_plan", device);
  if (device) CUDA_BACKEND(cuda::moe_plan(offsets_E1, row_pair_M, pair_row_NK, topk_idx_NK, capacity));
  cpu::moe_plan(offsets_E1.i32(), row_pair_M.i32(), pair_row_NK.i32(), topk_idx_NK.i32(), N, E, K, capacity);
}

void moe_count_experts(const Tensor& routed_E, const Tensor& kept_E, const Tensor& topk_idx_NK,
                       const Tensor& offsets_E1) {
  const int64_t E = routed_E.numel();
  expect(kept_E.numel() == E && offsets_E1.numel() == E + 1, "moe_count_experts",
         "routed " + routed_E.shape_string() + ", kept " + kept_E.shape_string() + ", offsets " +
             offsets_E1.shape_string());
  const bool device = on_device("moe_count_experts", routed_E, kept_E, topk_idx_NK, offsets_E1);
  const OpTimer timer("moe_count_experts", device);
  if (device) {
    CUDA_BACKEND(cuda::moe_count_experts(routed_E, kept_E, topk_idx_NK, offsets_E1));
  }
  cpu::moe_count_experts(routed_E.i32(), kept_E.i32(), topk_idx_NK.i32(), topk_idx_NK.numel(), offsets_E1.i32(), E);
}

void moe_permute(const Tensor& xs_MD, const Tensor& x_ND, const Tensor& pair_row_NK) {
  const int64_t N = rows_of(x_ND);
  expect(xs_MD.size(-1) == x_ND.size(-1) && N > 0 && pair_row_NK.numel() % N == 0, "moe_permute",
         "xs " + xs_MD.shape_string() + ", x " + x_ND.shape_string() + ", pair_row " + pair_row_NK.shape_string());
  const bool device = on_device("moe_permute", xs_MD, x_ND, pair_row_NK);
  const OpTimer timer("moe_permute", device);
  if (device) CUDA_BACKEND(cuda::moe_permute(xs_MD, x_ND, pair_row_NK));
  cpu::moe_permute(write_f32(xs_MD), read_f32(x_ND), pair_row_NK.i32(), N, x_ND.size(-1), pair_row_NK.numel() / N);
}

void moe_permute_backward(const Tensor& dx_ND, const Tensor& dxs_MD, const Tensor& pair_row_NK) {
  const int64_t N = rows_of(dx_ND);
  expect(dxs_MD.size(-1) == dx_ND.size(-1) && N > 0 && pair_row_NK.numel() % N == 0, "moe_permute_backward",
         "dx " + dx_ND.shape_string() + ", dxs " + dxs_MD.shape_string() + ", pair_row " + pair_row_NK.shape_string());
  const bool device = on_device("moe_permute_backward", dx_ND, dxs_MD, pair_row_NK);
  const OpTimer timer("moe_permute_backward", device);
  if (device) CUDA_BACKEND(cuda::moe_permute_backward(dx_ND, dxs_MD, pair_row_NK));
  cpu::moe_permute_backward(write_f32(dx_ND), read_f32(dxs_MD), pair_row_NK.i32(), N, dx_ND.size(-1),
                            pair_row_NK.numel() / N);
}

void gather_rows(const Tensor& dst_RD, const Tensor& src_RD, const Tensor& index_R) {
  const int64_t R = index_R.numel();
  expect(dst_RD.dtype == src_RD.dtype && dst_RD.size(-1) == src_RD.size(-1) && dst_RD.size(0) >= R &&
             index_R.dtype == DType::kI32,
         "gather_rows", "dst " + dst_RD.shape_string() + ", src " + src_RD.shape_string() + ", index " +
                            index_R.shape_string());
  const bool device = on_device("gather_rows", dst_RD, src_RD, index_R);
  const OpTimer timer("gather_rows", device);
  if (device) CUDA_BACKEND(cuda::gather_rows(dst_RD, src_RD, index_R));
  const int64_t row_bytes = dst_RD.size(-1) * dtype_bytes(dst_RD.dtype), rows = src_RD.size(0);
  const int32_t* index = index_R.i32();
  for (int64_t i = 0; i < R; ++i) {
    expect(index[i] >= 0 && index[i] < rows, "gather_rows", "index " + std::to_string(index[i]) + " outside the " +
                                                                std::to_string(rows) + " rows of src");
    std::memcpy(static_cast<char*>(dst_RD.data) + i * row_bytes,
                static_cast<const char*>(src_RD.data) + index[i] * row_bytes, static_cast<size_t>(row_bytes));
  }
}

void moe_unpermute(const Tensor& out_ND, const Tensor& ys_MD, const Tensor& topk_w_NK, const Tensor& pair_row_NK) {
  expect(ys_MD.size(-1) == out_ND.size(-1) && topk_w_NK.numel() == pair_row_NK.numel() &&
             rows_of(topk_w_NK) == rows_of(out_ND),
         "moe_unpermute", "out " + out_ND.shape_string() + ", ys " + ys_MD.shape_string() + ", topk_w " +
                              topk_w_NK.shape_string() + ", pair_row " + pair_row_NK.shape_string());
  const bool device = on_device("moe_unpermute", out_ND, ys_MD, topk_w_NK, pair_row_NK);
  const OpTimer timer("moe_unpermute", device);
  if (device)
    CUDA_BACKEND(cuda::moe_unpermute(out_ND, ys_MD, topk_w_NK, pair_row_NK));
  cpu::moe_unpermute(write_f32(out_ND), read_f32(ys_MD), read_f32(topk_w_NK), pair_row_NK.i32(), rows_of(out_ND),
                     out_ND.size(-1), topk_w_NK.size(-1));
}

void moe_unpermute_backward(const Tensor& dys_MD, const Tensor& dtopk_w_NK, const Tensor& dout_ND,
                            const Tensor& ys_MD, const Tensor& topk_w_NK, const Tensor& pair_row_NK) {
  expect(dys_MD.numel() == ys_MD.numel() && ys_MD.size(-1) == dout_ND.size(-1) &&
             dtopk_w_NK.numel() == topk_w_NK.numel() && topk_w_NK.numel() == pair_row_NK.numel() &&
             rows_of(topk_w_NK) == rows_of(dout_ND),
         "moe_unpermute_backward", "dys " + dys_MD.shape_string() + ", ys " + ys_MD.shape_string() + ", dout " +
                                       dout_ND.shape_string() + ", topk_w " + topk_w_NK.shape_string());
  const bool device = on_device("moe_unpermute_backward", dys_MD, dtopk_w_NK, dout_ND, ys_MD, topk_w_NK, pair_row_NK);
  const OpTimer timer("moe_unpermute_backward", device);
  if (device)
    CUDA_BACKEND(cuda::moe_unpermute_backward(dys_MD, dtopk_w_NK, dout_ND, ys_MD, topk_w_NK, pair_row_NK));
  cpu::moe_unpermute_backward(write_f32(dys_MD), write_f32(dtopk_w_NK), read_f32(dout_ND), read_f32(ys_MD), read_f32(topk_w_NK),
                              pair_row_NK.i32(), rows_of(dout_ND), dout_ND.size(-1), topk_w_NK.size(-1));
}

void grouped_matmul_forward(const Tensor& out_MO, const Tensor& x_MI, const Tensor& w_EIO,
                            const Tensor& offsets_E1) {
  const bool device = on_device("grouped_matmul_forward", out_MO, x_MI, w_EIO, offsets_E1);
  const OpTimer timer("grouped_matmul_forward", device);
  const bool ok = w_EIO.ndim == 3 && x_MI.size(-1) == w_EIO.size(1) && out_MO.size(-1) == w_EIO.size(2) &&
                  rows_of(out_MO) == rows_of(x_MI) && offsets_E1.numel() == w_EIO.size(0) + 1;
  expect(ok, "grouped_matmul_forward",
         ok ? "" : out_MO.shape_string() + " = " + x_MI.shape_string() + " x " + w_EIO.shape_string() +
                       ", offsets " + offsets_E1.shape_string());
  // Device: the offsets stay on the device (no sync); one launch for all experts.
  if (device) CUDA_BACKEND(cuda::grouped_matmul_forward(out_MO, x_MI, w_EIO, offsets_E1));
  cpu::grouped_matmul_forward(write_f32(out_MO), read_f32(x_MI), read_f32(w_EIO), offsets_E1.i32(), w_EIO.size(0),
                              w_EIO.size(1), w_EIO.size(2));
}

void grouped_matmul_backward(const Tensor& dx_MI, const Tensor& dw_EIO, const Tensor& dout_MO, const Tensor& x_MI,
                             const Tensor& w_EIO, const Tensor& offsets_E1) {
  const bool device = on_device("grouped_matmul_backward", dx_MI, dw_EIO, dout_MO, x_MI, w_EIO, offsets_E1);
  const OpTimer timer("grouped_matmul_backward", device);
  // The CPU reference needs dx; the CUDA backend may skip it (dx empty).
  const bool ok = w_EIO.ndim == 3 && x_MI.size(-1) == w_EIO.size(1) && dout_MO.size(-1) == w_EIO.size(2) &&
                  rows_of(dout_MO) == rows_of(x_MI) && dw_EIO.numel() == w_EIO.numel() &&
                  offsets_E1.numel() == w_EIO.size(0) + 1 &&
                  (dx_MI.data == nullptr ? device
                                         : dx_MI.size(-1) == x_MI.size(-1) && rows_of(dx_MI) == rows_of(x_MI));
  expect(ok, "grouped_matmul_backward",
         ok ? "" : "dx " + dx_MI.shape_string() + ", dw " + dw_EIO.shape_string() + ", dout " +
                       dout_MO.shape_string() + ", x " + x_MI.shape_string() + ", w " + w_EIO.shape_string() +
                       ", offsets " + offsets_E1.shape_string());
  if (device) CUDA_BACKEND(cuda::grouped_matmul_backward(dx_MI, dw_EIO, dout_MO, x_MI, w_EIO, offsets_E1));
  cpu::grouped_matmul_backward(write_f32(dx_MI), write_f32(dw_EIO), read_f32(dout_MO), read_f32(x_MI), read_f32(w_EIO),
                               offsets_E1.i32(), w_EIO.size(0), w_EIO.size(1), w_EIO.size(2));
}

void reserve_attention_backward(Device device, int64_t B, int64_t T, int64_t H) {
  if (device == Device::kCuda) CUDA_BACKEND(cuda::reserve_attention_backward(B, T, H));
}

void reserve_rmsnorm_backward(Device device, int64_t N, int64_t D) {
  if (device == Device::kCuda) CUDA_BACKEND(cuda::reserve_rmsnorm_backward(N, D));
}

void reserve_router_aux_losses(Device device, int64_t N, int64_t T, int64_t E) {
  if (device == Device::kCuda) CUDA_BACKEND(cuda::reserve_router_aux_losses(N, T, E));
}

}  // namespace moe::ops
