// Dispatch from device-neutral ops to a backend: every op is one OpCall
// (where it runs, its shape rules, its timer), then the CUDA backend for
// device tensors or the CPU reference for host ones. Shape mismatches are
// bugs in our code (the model plans every buffer), so they throw
// std::logic_error naming the op and the shapes. A build without CUDA links
// the backend's stub (cuda/cuda_ops_stub.cc), which says so if ever called.
#include "src/kernels/ops.h"

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "src/core/bf16.h"
#include "src/core/tensor_pool.h"
#include "src/kernels/gpu_kernels.h"
#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/cudnn_attention.h"
#include "src/kernels/cuda/cutlass_grouped_gemm.h"
#include "src/kernels/op_profile.h"

namespace moe::ops {
namespace {

// Where the tensors of a call live: host or device; mixing them is a bug in
// the caller. Empty (optional) tensors do not count.
class Placement {
 public:
  template <typename... Ts>
  explicit Placement(const Ts&... ts) {
    (add(ts), ...);
  }
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

// One call of an op: the ritual every op shares. Decides where it runs,
// checks its shape rules, and times it (op_profile.h).
class OpCall {
 public:
  OpCall(const char* op, const Placement& where) : op_(op), device_(where.on_device(op)), timer_(op, device_) {}
  bool on_device() const { return device_; }
  // A shape rule; `shapes()` (called only when it is broken) says what they are.
  template <typename F>
  void expect(bool ok, F&& shapes) const {
    if (!ok) throw std::logic_error(std::string(op_) + ": " + shapes());
  }

 private:
  const char* op_;
  bool device_;
  OpTimer timer_;
};

// The implementation the GPU runs for this attention shape (gpu_kernels.h).
const kernels::Choice& device_attention(const Tensor& q, const Tensor& k) {
  return kernels::attention_choice({q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), q.dtype});
}

// The implementation the GPU runs for the expert GEMMs of this weight (gpu_kernels.h).
const kernels::Choice& device_expert_gemm(const Tensor& w_EIO, const Tensor& x_MI) {
  return kernels::expert_gemm_choice({w_EIO.size(0), w_EIO.size(1), w_EIO.size(2), x_MI.dtype});
}

// All dims but the last (also when the last is 0).
int64_t rows_of(const Tensor& t) {
  int64_t rows = 1;
  for (int d = 0; d + 1 < t.ndim; ++d) rows *= t.shape[d];
  return rows;
}

bool same_shape(const Tensor& a, const Tensor& b) {
  if (a.ndim != b.ndim) return false;
  for (int d = 0; d < a.ndim; ++d)
    if (a.shape[d] != b.shape[d]) return false;
  return true;
}

// Shapes for messages: "dx [2, 3], x [2, 4]".
std::string shapes(std::initializer_list<std::pair<const char*, const Tensor*>> named) {
  std::string out;
  for (const auto& [name, t] : named) out += (out.empty() ? "" : ", ") + std::string(name) + " " + t->shape_string();
  return out;
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

// ---- dense ops ---------------------------------------------------------------

void embedding_forward(const Tensor& out_ND, const Tensor& tokens_N, const Tensor& table_VD) {
  const OpCall call("embedding_forward", Placement(out_ND, tokens_N, table_VD));
  call.expect(out_ND.size(-1) == table_VD.size(-1) && rows_of(out_ND) == tokens_N.numel(), [&] {
    return shapes({{"out", &out_ND}, {"tokens", &tokens_N}, {"table", &table_VD}});
  });
  if (call.on_device()) return cuda::embedding_forward(out_ND, tokens_N, table_VD);
  cpu::embedding_forward(write_f32(out_ND), tokens_N.i32(), read_f32(table_VD), tokens_N.numel(), table_VD.size(-1));
}

void embedding_backward(const Tensor& dtable_VD, const Tensor& dout_ND, const Tensor& tokens_N) {
  const OpCall call("embedding_backward", Placement(dtable_VD, dout_ND, tokens_N));
  call.expect(dout_ND.size(-1) == dtable_VD.size(-1) && rows_of(dout_ND) == tokens_N.numel(), [&] {
    return shapes({{"dtable", &dtable_VD}, {"dout", &dout_ND}, {"tokens", &tokens_N}});
  });
  if (call.on_device()) return cuda::embedding_backward(dtable_VD, dout_ND, tokens_N);
  cpu::embedding_backward(write_f32(dtable_VD), read_f32(dout_ND), tokens_N.i32(), tokens_N.numel(),
                          dtable_VD.size(-1));
}

void rmsnorm_forward(const Tensor& out_ND, const Tensor& rstd_N, const Tensor& x_ND, const Tensor& w_D, float eps) {
  const OpCall call("rmsnorm_forward", Placement(out_ND, rstd_N, x_ND, w_D));
  call.expect(x_ND.size(-1) == w_D.numel(), [&] { return shapes({{"x", &x_ND}, {"w", &w_D}}); });
  if (call.on_device()) return cuda::rmsnorm_forward(out_ND, rstd_N, x_ND, w_D, eps);
  cpu::rmsnorm_forward(write_f32(out_ND), write_f32(rstd_N), read_f32(x_ND), read_f32(w_D), rows_of(x_ND), w_D.numel(),
                       eps);
}

void add_rmsnorm_forward(const Tensor& sum_ND, const Tensor& out_ND, const Tensor& rstd_N, const Tensor& x_ND,
                         const Tensor& y_ND, const Tensor& w_D, float eps) {
  const OpCall call("add_rmsnorm_forward", Placement(sum_ND, out_ND, rstd_N, x_ND, y_ND, w_D));
  call.expect(x_ND.size(-1) == w_D.numel() && same_shape(x_ND, y_ND) && same_shape(x_ND, sum_ND) &&
                  same_shape(x_ND, out_ND) && rstd_N.numel() == rows_of(x_ND) && x_ND.dtype == y_ND.dtype &&
                  x_ND.dtype == sum_ND.dtype,
              [&] {
                return shapes({{"sum", &sum_ND}, {"out", &out_ND}, {"x", &x_ND}, {"y", &y_ND}, {"w", &w_D}}) +
                       " (x, y and sum one dtype)";
              });
  if (call.on_device()) return cuda::add_rmsnorm_forward(sum_ND, out_ND, rstd_N, x_ND, y_ND, w_D, eps);
  // The unfused sequence: the sum rounded to its dtype, then the norm of what was stored.
  cpu::add(write_f32(sum_ND), read_f32(x_ND), read_f32(y_ND), x_ND.numel());
  cpu::rmsnorm_forward(write_f32(out_ND), write_f32(rstd_N), read_f32(sum_ND), read_f32(w_D), rows_of(x_ND),
                       w_D.numel(), eps);
}

void rmsnorm_backward(const Tensor& dx_ND, const Tensor& dw_D, const Tensor& dout_ND, const Tensor& x_ND,
                      const Tensor& w_D, const Tensor& rstd_N, const Tensor& dresidual_ND) {
  const OpCall call("rmsnorm_backward", Placement(dx_ND, dw_D, dout_ND, x_ND, w_D, rstd_N, dresidual_ND));
  call.expect(x_ND.size(-1) == w_D.numel() && dw_D.numel() == w_D.numel() && rows_of(dx_ND) == rows_of(x_ND) &&
                  rows_of(dout_ND) == rows_of(x_ND) && rstd_N.numel() == rows_of(x_ND) &&
                  (dresidual_ND.data == nullptr ||
                   (dresidual_ND.numel() == dx_ND.numel() && dresidual_ND.dtype == dx_ND.dtype)),
              [&] {
                return shapes({{"dx", &dx_ND},
                               {"dw", &dw_D},
                               {"dout", &dout_ND},
                               {"x", &x_ND},
                               {"w", &w_D},
                               {"rstd", &rstd_N},
                               {"dresidual", &dresidual_ND}}) +
                       " (dresidual in dx's dtype, or empty)";
              });
  if (call.on_device()) return cuda::rmsnorm_backward(dx_ND, dw_D, dout_ND, x_ND, w_D, rstd_N, dresidual_ND);
  // The CPU reference accumulates into dx: start it from the residual's gradient.
  if (dresidual_ND.data == nullptr) {
    zero(dx_ND);
  } else if (dresidual_ND.data != dx_ND.data) {
    copy_tensor(dx_ND, dresidual_ND);
  }
  cpu::rmsnorm_backward(write_f32(dx_ND), write_f32(dw_D), read_f32(dout_ND), read_f32(x_ND), read_f32(w_D),
                        read_f32(rstd_N), rows_of(x_ND), w_D.numel());
}

namespace {

// The shape rules of a linear layer (matmul and its FP8 variant).
void expect_linear(const OpCall& call, const Tensor& out_NO, const Tensor& x_NI, const Tensor& w_OI) {
  call.expect(w_OI.ndim == 2 && x_NI.size(-1) == w_OI.size(1) && out_NO.size(-1) == w_OI.size(0) &&
                  rows_of(out_NO) == rows_of(x_NI),
              [&] { return out_NO.shape_string() + " = " + x_NI.shape_string() + " x " + w_OI.shape_string() + "^T"; });
}

void expect_linear_backward(const OpCall& call, const Tensor& dx_NI, const Tensor& dw_OI, const Tensor& dout_NO,
                            const Tensor& x_NI, const Tensor& w_OI) {
  call.expect(w_OI.ndim == 2 && x_NI.size(-1) == w_OI.size(1) && dout_NO.size(-1) == w_OI.size(0) &&
                  rows_of(dout_NO) == rows_of(x_NI) && dw_OI.numel() == w_OI.numel() &&
                  (dx_NI.data == nullptr || (dx_NI.size(-1) == x_NI.size(-1) && rows_of(dx_NI) == rows_of(x_NI))),
              [&] {
                return shapes({{"dx", &dx_NI}, {"dw", &dw_OI}, {"dout", &dout_NO}, {"x", &x_NI}, {"w", &w_OI}});
              });
}

}  // namespace

void matmul_forward(const Tensor& out_NO, const Tensor& x_NI, const Tensor& w_OI) {
  const OpCall call("matmul_forward", Placement(out_NO, x_NI, w_OI));
  expect_linear(call, out_NO, x_NI, w_OI);
  if (call.on_device()) return cuda::matmul_forward(out_NO, x_NI, w_OI);
  cpu::matmul_forward(write_f32(out_NO), read_f32(x_NI), read_f32(w_OI), rows_of(x_NI), w_OI.size(1), w_OI.size(0));
}

void matmul_backward(const Tensor& dx_NI, const Tensor& dw_OI, const Tensor& dout_NO, const Tensor& x_NI,
                     const Tensor& w_OI, GradInto dx_into) {
  const OpCall call("matmul_backward", Placement(dx_NI, dw_OI, dout_NO, x_NI, w_OI));
  expect_linear_backward(call, dx_NI, dw_OI, dout_NO, x_NI, w_OI);
  if (call.on_device()) return cuda::matmul_backward(dx_NI, dw_OI, dout_NO, x_NI, w_OI, dx_into == GradInto::kAdd);
  if (dx_into == GradInto::kWrite && dx_NI.data != nullptr) zero(dx_NI);  // the CPU reference accumulates
  cpu::matmul_backward(write_f32(dx_NI), write_f32(dw_OI), read_f32(dout_NO), read_f32(x_NI), read_f32(w_OI),
                       rows_of(x_NI), w_OI.size(1), w_OI.size(0));
}

void fp8_matmul_forward(const Tensor& out_NO, const Tensor& x_NI, const Tensor& w_OI) {
  const OpCall call("fp8_matmul_forward", Placement(out_NO, x_NI, w_OI));
  expect_linear(call, out_NO, x_NI, w_OI);
  if (call.on_device()) return cuda::fp8_matmul_forward(out_NO, x_NI, w_OI);
  cpu::fp8_matmul_forward(write_f32(out_NO), read_f32(x_NI), read_f32(w_OI), rows_of(x_NI), w_OI.size(1), w_OI.size(0));
}

void fp8_matmul_backward(const Tensor& dx_NI, const Tensor& dw_OI, const Tensor& dout_NO, const Tensor& x_NI,
                         const Tensor& w_OI, GradInto dx_into) {
  const OpCall call("fp8_matmul_backward", Placement(dx_NI, dw_OI, dout_NO, x_NI, w_OI));
  expect_linear_backward(call, dx_NI, dw_OI, dout_NO, x_NI, w_OI);
  if (call.on_device()) {
    return cuda::fp8_matmul_backward(dx_NI, dw_OI, dout_NO, x_NI, w_OI, dx_into == GradInto::kAdd);
  }
  if (dx_into == GradInto::kWrite && dx_NI.data != nullptr) zero(dx_NI);  // the CPU reference accumulates
  cpu::fp8_matmul_backward(write_f32(dx_NI), write_f32(dw_OI), read_f32(dout_NO), read_f32(x_NI), read_f32(w_OI),
                           rows_of(x_NI), w_OI.size(1), w_OI.size(0));
}

void reserve_fp8_matmul(Device device, int64_t N, int64_t I, int64_t O) {
  if (device == Device::kCuda) cuda::reserve_fp8_matmul(N, I, O);
}

int64_t fp8_matmul_gpu_bytes(int64_t N, int64_t I, int64_t O) { return cuda::fp8_matmul_scratch_bytes(N, I, O); }

void rope_forward(const Tensor& x_BTHDh, float theta, int64_t first_position) {
  const OpCall call("rope_forward", Placement(x_BTHDh));
  call.expect(x_BTHDh.ndim == 4 && first_position >= 0, [&] {
    return "x must be [B, T, heads, Dh] at a position >= 0, is " + x_BTHDh.shape_string() + " at " +
           std::to_string(first_position);
  });
  if (call.on_device()) return cuda::rope_forward(x_BTHDh, theta, first_position);
  cpu::rope_forward(write_f32(x_BTHDh), x_BTHDh.size(0) * x_BTHDh.size(1), x_BTHDh.size(1), x_BTHDh.size(2),
                    x_BTHDh.size(3), theta, first_position);
}

void rope_backward(const Tensor& dx_BTHDh, float theta) {
  const OpCall call("rope_backward", Placement(dx_BTHDh));
  call.expect(dx_BTHDh.ndim == 4, [&] { return "dx must be [B, T, heads, Dh], is " + dx_BTHDh.shape_string(); });
  if (call.on_device()) return cuda::rope_backward(dx_BTHDh, theta);
  cpu::rope_backward(write_f32(dx_BTHDh), dx_BTHDh.size(0) * dx_BTHDh.size(1), dx_BTHDh.size(1), dx_BTHDh.size(2),
                     dx_BTHDh.size(3), theta);
}

void attention_forward(const Tensor& out, const Tensor& lse_BHT, const Tensor& q, const Tensor& k, const Tensor& v) {
  const OpCall call("attention_forward", Placement(out, lse_BHT, q, k, v));
  call.expect(q.ndim == 4 && k.ndim == 4 && k.size(2) > 0 && q.size(2) % k.size(2) == 0 && same_shape(k, v) &&
                  same_shape(out, q),
              [&] {
                return shapes({{"out", &out}, {"q", &q}, {"k", &k}, {"v", &v}});
              });
  if (call.on_device()) {
    if (device_attention(q, k).vendor) {
      return cuda::cudnn_attention::forward(out, lse_BHT, q, k, v, kernels::settings().deterministic);
    }
    return cuda::attention_forward(out, lse_BHT, q, k, v);
  }
  cpu::attention_forward(write_f32(out), write_f32(lse_BHT), read_f32(q), read_f32(k), read_f32(v), q.size(0),
                         q.size(1), q.size(2), k.size(2), q.size(3));
}

void attention_decode(const Tensor& out_HDh, const Tensor& q_HDh, const Tensor& k_cache_TGDh,
                      const Tensor& v_cache_TGDh, int64_t length) {
  const OpCall call("attention_decode", Placement(out_HDh, q_HDh, k_cache_TGDh, v_cache_TGDh));
  call.expect(
      q_HDh.ndim == 2 && same_shape(out_HDh, q_HDh) && k_cache_TGDh.ndim == 3 &&
          same_shape(k_cache_TGDh, v_cache_TGDh) && k_cache_TGDh.size(1) > 0 &&
          q_HDh.size(0) % k_cache_TGDh.size(1) == 0 && k_cache_TGDh.size(2) == q_HDh.size(1) && length > 0 &&
          length <= k_cache_TGDh.size(0),
      [&] {
        return shapes({{"out", &out_HDh}, {"q", &q_HDh}, {"k_cache", &k_cache_TGDh}, {"v_cache", &v_cache_TGDh}}) +
               ", length " + std::to_string(length);
      });
  if (call.on_device()) return cuda::attention_decode(out_HDh, q_HDh, k_cache_TGDh, v_cache_TGDh, length);
  cpu::attention_decode(write_f32(out_HDh), read_f32(q_HDh), read_f32(k_cache_TGDh), read_f32(v_cache_TGDh), length,
                        q_HDh.size(0), k_cache_TGDh.size(1), q_HDh.size(1));
}

void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout, const Tensor& q,
                        const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse_BHT) {
  const OpCall call("attention_backward", Placement(dq, dk, dv, dout, q, k, v, out, lse_BHT));
  call.expect(q.ndim == 4 && k.ndim == 4 && k.size(2) > 0 && q.size(2) % k.size(2) == 0 && same_shape(k, v) &&
                  same_shape(dq, q) && same_shape(dk, k) && same_shape(dv, v) && same_shape(dout, q) &&
                  same_shape(out, q) && lse_BHT.numel() == q.size(0) * q.size(2) * q.size(1),
              [&] {
                return shapes({{"dq", &dq},
                               {"dk", &dk},
                               {"dv", &dv},
                               {"dout", &dout},
                               {"q", &q},
                               {"k", &k},
                               {"v", &v},
                               {"out", &out},
                               {"lse", &lse_BHT}});
              });
  if (call.on_device()) {
    if (device_attention(q, k).vendor) {
      return cuda::cudnn_attention::backward(dq, dk, dv, dout, q, k, v, out, lse_BHT,
                                             kernels::settings().deterministic);
    }
    return cuda::attention_backward(dq, dk, dv, dout, q, k, v, out, lse_BHT);
  }
  for (const Tensor* t : {&dq, &dk, &dv}) zero(*t);  // the CPU reference accumulates
  cpu::attention_backward(write_f32(dq), write_f32(dk), write_f32(dv), read_f32(dout), read_f32(q), read_f32(k),
                          read_f32(v), read_f32(out), read_f32(lse_BHT), q.size(0), q.size(1), q.size(2), k.size(2),
                          q.size(3));
}

void swiglu_forward(const Tensor& out, const Tensor& a, const Tensor& b) {
  const OpCall call("swiglu_forward", Placement(out, a, b));
  call.expect(a.numel() == b.numel() && out.numel() == a.numel(), [&] {
    return shapes({{"out", &out}, {"a", &a}, {"b", &b}});
  });
  if (call.on_device()) return cuda::swiglu_forward(out, a, b);
  cpu::swiglu_forward(write_f32(out), read_f32(a), read_f32(b), a.numel());
}

void swiglu_backward(const Tensor& da, const Tensor& db, const Tensor& dout, const Tensor& a, const Tensor& b) {
  const OpCall call("swiglu_backward", Placement(da, db, dout, a, b));
  call.expect(a.numel() == b.numel() && da.numel() == a.numel() && db.numel() == a.numel() && dout.numel() == a.numel(),
              [&] {
                return shapes({{"da", &da}, {"db", &db}, {"dout", &dout}, {"a", &a}, {"b", &b}});
              });
  if (call.on_device()) return cuda::swiglu_backward(da, db, dout, a, b);
  cpu::swiglu_backward(write_f32(da), write_f32(db), read_f32(dout), read_f32(a), read_f32(b), a.numel());
}

void cross_entropy_forward_backward(const Tensor& loss_n, const Tensor& dlogits_nV, const Tensor& logits_nV,
                                    const Tensor& targets_n, float grad_scale) {
  const OpCall call("cross_entropy_forward_backward", Placement(loss_n, dlogits_nV, logits_nV, targets_n));
  call.expect(rows_of(logits_nV) == targets_n.numel(), [&] {
    return shapes({{"logits", &logits_nV}, {"targets", &targets_n}});
  });
  if (call.on_device()) {
    return cuda::cross_entropy_forward_backward(loss_n, dlogits_nV, logits_nV, targets_n, grad_scale);
  }
  cpu::cross_entropy_forward_backward(write_f32(loss_n), write_f32(dlogits_nV), read_f32(logits_nV), targets_n.i32(),
                                      targets_n.numel(), logits_nV.size(-1), grad_scale);
}

void cast(const Tensor& dst, const Tensor& src) {
  const OpCall call("cast", Placement(dst, src));
  const bool known = dst.dtype == src.dtype || (dst.dtype == DType::kBF16 && src.dtype == DType::kF32) ||
                     (dst.dtype == DType::kF32 && src.dtype == DType::kBF16);
  call.expect(dst.numel() == src.numel() && known, [&] {
    return dst.shape_string() + " " + dtype_name(dst.dtype) + " <- " + src.shape_string() + " " + dtype_name(src.dtype);
  });
  if (call.on_device()) return cuda::cast(dst, src);
  if (dst.dtype == src.dtype) return copy_tensor(dst, src);
  if (dst.dtype == DType::kBF16) {
    return cpu::cast_f32_to_bf16(static_cast<uint16_t*>(dst.data), src.f32(), src.numel());
  }
  cpu::cast_bf16_to_f32(dst.f32(), static_cast<const uint16_t*>(src.data), src.numel());
}

void add(const Tensor& out, const Tensor& a, const Tensor& b) {
  const OpCall call("add", Placement(out, a, b));
  call.expect(out.numel() == a.numel() && out.numel() == b.numel(),
              [&] { return out.shape_string() + " = " + a.shape_string() + " + " + b.shape_string(); });
  if (call.on_device()) return cuda::add(out, a, b);
  cpu::add(write_f32(out), read_f32(a), read_f32(b), out.numel());
}

void scale_inplace(const Tensor& x, float factor) {
  const OpCall call("scale_inplace", Placement(x));
  if (call.on_device()) return cuda::scale_inplace(x, factor);
  cpu::scale_inplace(write_f32(x), x.numel(), factor);
}

void multiply_noise(const Tensor& out, const Tensor& x, const Tensor& key_4, uint64_t stream,
                    const noise::Distribution& d) {
  const OpCall call("multiply_noise", Placement(out, x, key_4));
  call.expect(out.numel() == x.numel() && key_4.dtype == DType::kI32 && key_4.numel() == noise::kKeyWords, [&] {
    return shapes({{"out", &out}, {"x", &x}, {"key (I32 [4])", &key_4}});
  });
  if (call.on_device()) return cuda::multiply_noise(out, x, key_4, stream, d);
  cpu::multiply_noise(write_f32(out), read_f32(x), x.numel(), key_4.i32(), stream, d);
}

void multiply_noise_rows(const Tensor& out_RC, const Tensor& x_RC, const Tensor& row_id_R2,
                         int64_t rows_per_micro_batch, const Tensor& key_4, uint64_t stream,
                         const noise::Distribution& d) {
  const OpCall call("multiply_noise_rows", Placement(out_RC, x_RC, row_id_R2, key_4));
  const int64_t R = row_id_R2.numel() / 2;
  call.expect(
      out_RC.numel() == x_RC.numel() && x_RC.ndim == 2 && x_RC.size(0) == R && row_id_R2.ndim == 2 &&
          row_id_R2.size(1) == 2 && row_id_R2.dtype == DType::kI32 && key_4.dtype == DType::kI32 &&
          key_4.numel() == noise::kKeyWords && rows_per_micro_batch >= 0,
      [&] {
        return shapes({{"out", &out_RC}, {"x [R, C]", &x_RC}, {"row_id (I32 [R, 2])", &row_id_R2}, {"key", &key_4}});
      });
  if (call.on_device())
    return cuda::multiply_noise_rows(out_RC, x_RC, row_id_R2, rows_per_micro_batch, key_4, stream, d);
  cpu::multiply_noise_rows(write_f32(out_RC), read_f32(x_RC), R, x_RC.size(1), row_id_R2.i32(), rows_per_micro_batch,
                           key_4.i32(), stream, d);
}

void noise_row_ids(const Tensor& ids_R2, const Tensor& rows_R, const Tensor& key_4) {
  const OpCall call("noise_row_ids", Placement(ids_R2, rows_R, key_4));
  const int64_t R = rows_R.numel();
  call.expect(ids_R2.dtype == DType::kI32 && rows_R.dtype == DType::kI32 && key_4.dtype == DType::kI32 &&
                  ids_R2.numel() == 2 * R && key_4.numel() == noise::kKeyWords,
              [&] {
                return shapes({{"ids (I32 [R, 2])", &ids_R2}, {"rows (I32 [R])", &rows_R}, {"key", &key_4}});
              });
  if (call.on_device()) return cuda::noise_row_ids(ids_R2, rows_R, key_4);
  cpu::noise_row_ids(ids_R2.i32(), rows_R.i32(), R, key_4.i32());
}

// ---- optimizer ---------------------------------------------------------------

void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamW& h, int64_t step,
                float grad_scale) {
  const OpCall call("adamw_step", Placement(param, grad, m, v));
  call.expect(grad.numel() == param.numel() && m.numel() == param.numel() && v.numel() == param.numel(), [&] {
    return shapes({{"param", &param}, {"grad", &grad}, {"m", &m}, {"v", &v}});
  });
  if (call.on_device()) {
    return cuda::adamw_step(param, grad, m, v, h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, step, grad_scale);
  }
  cpu::adamw_step(write_f32(param), read_f32(grad), write_f32(m), write_f32(v), param.numel(), h.lr, h.beta1, h.beta2,
                  h.eps, h.weight_decay, step, grad_scale);
}

double sum_squares(const Tensor& x) {
  const OpCall call("sum_squares", Placement(x));
  if (call.on_device()) return cuda::sum_squares(x);  // a host sync (see cuda::sum_squares)
  return cpu::sum_squares(read_f32(x), x.numel());
}

double sum_squares_many(const std::vector<Tensor>& xs) {
  Placement where;
  for (const Tensor& x : xs) where.add(x);
  const OpCall call("sum_squares_many", where);
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    // A shaped tensor without elements needs no data; anything else without data
    // (Tensor{}, no tensor at all) is a caller's bug.
    call.expect(x.dtype == DType::kF32 && (x.data != nullptr || (x.ndim > 0 && x.numel() == 0)), [&] {
      return "tensor " + std::to_string(i) + " " + x.shape_string() + " " + dtype_name(x.dtype) +
             (x.data ? "" : " without data") + "; wants f32, with data unless empty";
    });
  }
  // Device tensors: one reduction over the whole list, one host sync (cuda_ops.h).
  if (call.on_device()) return cuda::sum_squares_many(xs);
  // The same additions, in the same order, as summing sum_squares(x) in a loop
  // (the grad norm of the CPU path does not move by a bit).
  double sum = 0;
  for (const Tensor& x : xs) sum += cpu::sum_squares(x.f32(), x.numel());
  return sum;
}

void adamw_step_many(const std::vector<AdamWSlot>& slots, const AdamWShared& h, int64_t step, float grad_scale) {
  Placement where;
  for (const AdamWSlot& s : slots) {
    for (const Tensor* t : {&s.param, &s.grad, &s.m, &s.v, &s.compute}) where.add(*t);
  }
  const OpCall call("adamw_step_many", where);
  for (size_t i = 0; i < slots.size(); ++i) {
    const AdamWSlot& s = slots[i];
    const int64_t n = s.param.numel();
    const bool f32 = s.param.dtype == DType::kF32 && s.grad.dtype == DType::kF32 && s.m.dtype == DType::kF32 &&
                     s.v.dtype == DType::kF32;
    const bool copy_ok = s.compute.data == nullptr || (s.compute.dtype == DType::kBF16 && s.compute.numel() == n);
    call.expect(f32 && copy_ok && s.grad.numel() == n && s.m.numel() == n && s.v.numel() == n &&
                    (n == 0 || (s.param.data && s.grad.data && s.m.data && s.v.data)),
                [&] {
                  auto text = [](const char* name, const Tensor& t) {
                    return std::string(name) + " " + t.shape_string() + " " + dtype_name(t.dtype) +
                           (t.data ? "" : " without data");
                  };
                  return "slot " + std::to_string(i) + ": " + text("param", s.param) + ", " + text("grad", s.grad) +
                         ", " + text("m", s.m) + ", " + text("v", s.v) + ", " + text("compute", s.compute) +
                         "; wants f32 tensors of one size (and an optional bf16 copy)";
                });
  }
  // Device tensors: one launch for the whole list (cuda_ops.h).
  if (call.on_device()) return cuda::adamw_step_many(slots, h.lr, h.beta1, h.beta2, h.eps, step, grad_scale);
  for (const AdamWSlot& s : slots) {
    cpu::adamw_step(s.param.f32(), s.grad.f32(), s.m.f32(), s.v.f32(), s.param.numel(), h.lr, h.beta1, h.beta2, h.eps,
                    s.weight_decay, step, grad_scale);
    if (s.compute.data) cast(s.compute, s.param);
  }
}

// ---- MoE: router -----------------------------------------------------------------

void router_forward(const Tensor& topk_idx_NK, const Tensor& topk_w_NK, const Tensor& scores_NE,
                    const Tensor& logits_NE, const Tensor& bias_E, RouterKind kind) {
  const OpCall call("router_forward", Placement(topk_idx_NK, topk_w_NK, scores_NE, logits_NE, bias_E));
  call.expect(
      rows_of(topk_idx_NK) == rows_of(logits_NE) && topk_w_NK.numel() == topk_idx_NK.numel() &&
          scores_NE.numel() == logits_NE.numel(),
      [&] {
        return shapes(
            {{"topk_idx", &topk_idx_NK}, {"topk_w", &topk_w_NK}, {"scores", &scores_NE}, {"logits", &logits_NE}});
      });
  if (call.on_device()) return cuda::router_forward(topk_idx_NK, topk_w_NK, scores_NE, logits_NE, bias_E, kind);
  cpu::router_forward(topk_idx_NK.i32(), write_f32(topk_w_NK), write_f32(scores_NE), read_f32(logits_NE),
                      read_f32(bias_E), rows_of(logits_NE), logits_NE.size(-1), topk_idx_NK.size(-1), kind);
}

void router_noise_forward(const Tensor& logits_NE, const Tensor& noise_logits_NE, const Tensor& key_4,
                          uint64_t stream) {
  const OpCall call("router_noise_forward", Placement(logits_NE, noise_logits_NE, key_4));
  call.expect(
      logits_NE.numel() == noise_logits_NE.numel() && key_4.numel() == noise::kKeyWords && key_4.dtype == DType::kI32,
      [&] {
        return shapes({{"logits", &logits_NE}, {"noise_logits", &noise_logits_NE}, {"key", &key_4}});
      });
  if (call.on_device()) return cuda::router_noise_forward(logits_NE, noise_logits_NE, key_4, stream);
  cpu::router_noise_forward(write_f32(logits_NE), read_f32(noise_logits_NE), logits_NE.numel(), key_4.i32(), stream);
}

void router_noise_backward(const Tensor& dnoise_logits_NE, const Tensor& dlogits_NE, const Tensor& noise_logits_NE,
                           const Tensor& key_4, uint64_t stream) {
  const OpCall call("router_noise_backward", Placement(dnoise_logits_NE, dlogits_NE, noise_logits_NE, key_4));
  call.expect(dnoise_logits_NE.numel() == dlogits_NE.numel() && dlogits_NE.numel() == noise_logits_NE.numel() &&
                  key_4.numel() == noise::kKeyWords && key_4.dtype == DType::kI32,
              [&] {
                return shapes({{"dnoise_logits", &dnoise_logits_NE},
                               {"dlogits", &dlogits_NE},
                               {"noise_logits", &noise_logits_NE},
                               {"key", &key_4}});
              });
  if (call.on_device()) {
    return cuda::router_noise_backward(dnoise_logits_NE, dlogits_NE, noise_logits_NE, key_4, stream);
  }
  cpu::router_noise_backward(write_f32(dnoise_logits_NE), read_f32(dlogits_NE), read_f32(noise_logits_NE),
                             dlogits_NE.numel(), key_4.i32(), stream);
}

void router_backward(const Tensor& dlogits_NE, const Tensor& dtopk_w_NK, const Tensor& topk_idx_NK,
                     const Tensor& topk_w_NK, const Tensor& scores_NE, RouterKind kind) {
  const OpCall call("router_backward", Placement(dlogits_NE, dtopk_w_NK, topk_idx_NK, topk_w_NK, scores_NE));
  call.expect(
      dlogits_NE.numel() == scores_NE.numel() && dtopk_w_NK.numel() == topk_idx_NK.numel() &&
          topk_w_NK.numel() == topk_idx_NK.numel() && rows_of(topk_idx_NK) == rows_of(scores_NE),
      [&] {
        return shapes(
            {{"dlogits", &dlogits_NE}, {"dtopk_w", &dtopk_w_NK}, {"topk_idx", &topk_idx_NK}, {"scores", &scores_NE}});
      });
  if (call.on_device()) {
    return cuda::router_backward(dlogits_NE, dtopk_w_NK, topk_idx_NK, topk_w_NK, scores_NE, kind);
  }
  cpu::router_backward(write_f32(dlogits_NE), read_f32(dtopk_w_NK), topk_idx_NK.i32(), read_f32(topk_w_NK),
                       read_f32(scores_NE), rows_of(scores_NE), scores_NE.size(-1), topk_idx_NK.size(-1), kind);
}

void router_aux_losses(const Tensor& aux_3, const Tensor& daux_logits_NE, const Tensor& logits_NE,
                       const Tensor& scores_NE, const Tensor& topk_idx_NK, int64_t T, RouterKind kind, float w_lb,
                       float w_z, float w_seq, float grad_scale) {
  const OpCall call("router_aux_losses", Placement(aux_3, daux_logits_NE, logits_NE, scores_NE, topk_idx_NK));
  const int64_t N = rows_of(logits_NE);
  call.expect(T > 0 && N % T == 0, [&] { return "token count " + std::to_string(N) + " is not a multiple of T"; });
  call.expect(aux_3.numel() == 3, [&] { return "aux " + aux_3.shape_string() + " must hold 3 values"; });
  if (call.on_device()) {
    return cuda::router_aux_losses(aux_3, daux_logits_NE, logits_NE, scores_NE, topk_idx_NK, T, kind, w_lb, w_z, w_seq,
                                   grad_scale);
  }
  const cpu::RouterAux aux =
      cpu::router_aux_losses(write_f32(daux_logits_NE), read_f32(logits_NE), read_f32(scores_NE), topk_idx_NK.i32(),
                             N / T, T, logits_NE.size(-1), topk_idx_NK.size(-1), kind, w_lb, w_z, w_seq, grad_scale);
  float* values = aux_3.f32();
  values[0] = static_cast<float>(aux.load_balance);
  values[1] = static_cast<float>(aux.z_loss);
  values[2] = static_cast<float>(aux.sequence_balance);
}

// ---- MoE: dispatch plan, permute / unpermute ---------------------------------------

void moe_plan(const Tensor& offsets_E1, const Tensor& row_pair_M, const Tensor& pair_row_NK, const Tensor& topk_idx_NK,
              int64_t capacity, const Tensor& priority_NK) {
  const OpCall call("moe_plan", Placement(offsets_E1, row_pair_M, pair_row_NK, topk_idx_NK, priority_NK));
  const int64_t K = topk_idx_NK.size(-1), N = rows_of(topk_idx_NK), E = offsets_E1.numel() - 1;
  call.expect(row_pair_M.numel() >= N * K && pair_row_NK.numel() == N * K &&
                  (!priority_NK.data || (priority_NK.numel() == N * K && priority_NK.dtype == DType::kF32)),
              [&] {
                return shapes({{"row_pair", &row_pair_M},
                               {"pair_row", &pair_row_NK},
                               {"topk_idx", &topk_idx_NK},
                               {"priority", &priority_NK}});
              });
  if (call.on_device()) return cuda::moe_plan(offsets_E1, row_pair_M, pair_row_NK, topk_idx_NK, capacity, priority_NK);
  cpu::moe_plan(offsets_E1.i32(), row_pair_M.i32(), pair_row_NK.i32(), topk_idx_NK.i32(), N, E, K, capacity,
                priority_NK.data ? priority_NK.f32() : nullptr);
}

void moe_count_experts(const Tensor& routed_E, const Tensor& kept_E, const Tensor& topk_idx_NK,
                       const Tensor& offsets_E1) {
  const OpCall call("moe_count_experts", Placement(routed_E, kept_E, topk_idx_NK, offsets_E1));
  const int64_t E = routed_E.numel();
  call.expect(kept_E.numel() == E && offsets_E1.numel() == E + 1, [&] {
    return shapes({{"routed", &routed_E}, {"kept", &kept_E}, {"offsets", &offsets_E1}});
  });
  if (call.on_device()) return cuda::moe_count_experts(routed_E, kept_E, topk_idx_NK, offsets_E1);
  cpu::moe_count_experts(routed_E.i32(), kept_E.i32(), topk_idx_NK.i32(), topk_idx_NK.numel(), offsets_E1.i32(), E);
}

void moe_permute(const Tensor& xs_MD, const Tensor& x_ND, const Tensor& pair_row_NK) {
  const OpCall call("moe_permute", Placement(xs_MD, x_ND, pair_row_NK));
  const int64_t N = rows_of(x_ND);
  call.expect(xs_MD.size(-1) == x_ND.size(-1) && N > 0 && pair_row_NK.numel() % N == 0, [&] {
    return shapes({{"xs", &xs_MD}, {"x", &x_ND}, {"pair_row", &pair_row_NK}});
  });
  if (call.on_device()) return cuda::moe_permute(xs_MD, x_ND, pair_row_NK);
  cpu::moe_permute(write_f32(xs_MD), read_f32(x_ND), pair_row_NK.i32(), N, x_ND.size(-1), pair_row_NK.numel() / N);
}

void moe_permute_backward(const Tensor& dx_ND, const Tensor& dxs_MD, const Tensor& pair_row_NK) {
  const OpCall call("moe_permute_backward", Placement(dx_ND, dxs_MD, pair_row_NK));
  const int64_t N = rows_of(dx_ND);
  call.expect(dxs_MD.size(-1) == dx_ND.size(-1) && N > 0 && pair_row_NK.numel() % N == 0, [&] {
    return shapes({{"dx", &dx_ND}, {"dxs", &dxs_MD}, {"pair_row", &pair_row_NK}});
  });
  if (call.on_device()) return cuda::moe_permute_backward(dx_ND, dxs_MD, pair_row_NK);
  cpu::moe_permute_backward(write_f32(dx_ND), read_f32(dxs_MD), pair_row_NK.i32(), N, dx_ND.size(-1),
                            pair_row_NK.numel() / N);
}

void gather_rows(const Tensor& dst_RD, const Tensor& src_RD, const Tensor& index_R) {
  const OpCall call("gather_rows", Placement(dst_RD, src_RD, index_R));
  const int64_t R = index_R.numel();
  call.expect(dst_RD.dtype == src_RD.dtype && dst_RD.size(-1) == src_RD.size(-1) && dst_RD.size(0) >= R &&
                  index_R.dtype == DType::kI32,
              [&] {
                return shapes({{"dst", &dst_RD}, {"src", &src_RD}, {"index", &index_R}});
              });
  if (call.on_device()) return cuda::gather_rows(dst_RD, src_RD, index_R);
  cpu::gather_rows(dst_RD.data, src_RD.data, index_R.i32(), R, src_RD.size(0),
                   dst_RD.size(-1) * dtype_bytes(dst_RD.dtype));
}

void moe_unpermute(const Tensor& out_ND, const Tensor& ys_MD, const Tensor& topk_w_NK, const Tensor& pair_row_NK) {
  const OpCall call("moe_unpermute", Placement(out_ND, ys_MD, topk_w_NK, pair_row_NK));
  call.expect(ys_MD.size(-1) == out_ND.size(-1) && topk_w_NK.numel() == pair_row_NK.numel() &&
                  rows_of(topk_w_NK) == rows_of(out_ND),
              [&] {
                return shapes({{"out", &out_ND}, {"ys", &ys_MD}, {"topk_w", &topk_w_NK}, {"pair_row", &pair_row_NK}});
              });
  if (call.on_device()) return cuda::moe_unpermute(out_ND, ys_MD, topk_w_NK, pair_row_NK);
  cpu::moe_unpermute(write_f32(out_ND), read_f32(ys_MD), read_f32(topk_w_NK), pair_row_NK.i32(), rows_of(out_ND),
                     out_ND.size(-1), topk_w_NK.size(-1));
}

void moe_unpermute_backward(const Tensor& dys_MD, const Tensor& dtopk_w_NK, const Tensor& dout_ND, const Tensor& ys_MD,
                            const Tensor& topk_w_NK, const Tensor& pair_row_NK) {
  const OpCall call("moe_unpermute_backward", Placement(dys_MD, dtopk_w_NK, dout_ND, ys_MD, topk_w_NK, pair_row_NK));
  call.expect(dys_MD.numel() == ys_MD.numel() && ys_MD.size(-1) == dout_ND.size(-1) &&
                  dtopk_w_NK.numel() == topk_w_NK.numel() && topk_w_NK.numel() == pair_row_NK.numel() &&
                  rows_of(topk_w_NK) == rows_of(dout_ND),
              [&] {
                return shapes({{"dys", &dys_MD}, {"ys", &ys_MD}, {"dout", &dout_ND}, {"topk_w", &topk_w_NK}});
              });
  if (call.on_device()) {
    return cuda::moe_unpermute_backward(dys_MD, dtopk_w_NK, dout_ND, ys_MD, topk_w_NK, pair_row_NK);
  }
  cpu::moe_unpermute_backward(write_f32(dys_MD), write_f32(dtopk_w_NK), read_f32(dout_ND), read_f32(ys_MD),
                              read_f32(topk_w_NK), pair_row_NK.i32(), rows_of(dout_ND), dout_ND.size(-1),
                              topk_w_NK.size(-1));
}

// ---- MoE: grouped matmul over the rows of each expert ---------------------------------

void grouped_matmul_forward(const Tensor& out_MO, const Tensor& x_MI, const Tensor& w_EIO, const Tensor& offsets_E1) {
  const OpCall call("grouped_matmul_forward", Placement(out_MO, x_MI, w_EIO, offsets_E1));
  call.expect(w_EIO.ndim == 3 && x_MI.size(-1) == w_EIO.size(1) && out_MO.size(-1) == w_EIO.size(2) &&
                  rows_of(out_MO) == rows_of(x_MI) && offsets_E1.numel() == w_EIO.size(0) + 1,
              [&] {
                return out_MO.shape_string() + " = " + x_MI.shape_string() + " x " + w_EIO.shape_string() +
                       ", offsets " + offsets_E1.shape_string();
              });
  // Device: the offsets stay on the device (no sync); one launch for all experts.
  if (call.on_device()) {
    if (device_expert_gemm(w_EIO, x_MI).vendor) return cuda::cutlass_grouped::forward(out_MO, x_MI, w_EIO, offsets_E1);
    return cuda::grouped_matmul_forward(out_MO, x_MI, w_EIO, offsets_E1);
  }
  cpu::grouped_matmul_forward(write_f32(out_MO), read_f32(x_MI), read_f32(w_EIO), offsets_E1.i32(), w_EIO.size(0),
                              w_EIO.size(1), w_EIO.size(2));
}

void grouped_matmul_backward(const Tensor& dx_MI, const Tensor& dw_EIO, const Tensor& dout_MO, const Tensor& x_MI,
                             const Tensor& w_EIO, const Tensor& offsets_E1) {
  const OpCall call("grouped_matmul_backward", Placement(dx_MI, dw_EIO, dout_MO, x_MI, w_EIO, offsets_E1));
  // dx may be empty: only dW is wanted.
  call.expect(w_EIO.ndim == 3 && x_MI.size(-1) == w_EIO.size(1) && dout_MO.size(-1) == w_EIO.size(2) &&
                  rows_of(dout_MO) == rows_of(x_MI) && dw_EIO.numel() == w_EIO.numel() &&
                  offsets_E1.numel() == w_EIO.size(0) + 1 &&
                  (dx_MI.data == nullptr || (dx_MI.size(-1) == x_MI.size(-1) && rows_of(dx_MI) == rows_of(x_MI))),
              [&] {
                return shapes({{"dx", &dx_MI},
                               {"dw", &dw_EIO},
                               {"dout", &dout_MO},
                               {"x", &x_MI},
                               {"w", &w_EIO},
                               {"offsets", &offsets_E1}});
              });
  if (call.on_device()) {
    if (device_expert_gemm(w_EIO, x_MI).vendor) {
      return cuda::cutlass_grouped::backward(dx_MI, dw_EIO, dout_MO, x_MI, w_EIO, offsets_E1);
    }
    return cuda::grouped_matmul_backward(dx_MI, dw_EIO, dout_MO, x_MI, w_EIO, offsets_E1);
  }
  cpu::grouped_matmul_backward(write_f32(dx_MI), write_f32(dw_EIO), read_f32(dout_MO), read_f32(x_MI), read_f32(w_EIO),
                               offsets_E1.i32(), w_EIO.size(0), w_EIO.size(1), w_EIO.size(2));
}

// ---- scratch reserved before a CUDA graph is captured ---------------------------------

void reserve_grouped_matmul(Device device, int64_t E, int64_t I, int64_t O, DType dtype) {
  if (device == Device::kCuda) kernels::expert_gemm_choice({E, I, O, dtype});
}

void reserve_attention(Device device, int64_t B, int64_t T, int64_t H, int64_t G, int64_t Dh, DType dtype) {
  if (device != Device::kCuda) return;
  if (kernels::attention_choice(kernels::AttentionProblem{B, T, H, G, Dh, dtype}).vendor) return;
  cuda::reserve_attention(B, T, H);
}

void reserve_rmsnorm_backward(Device device, int64_t N, int64_t D) {
  if (device == Device::kCuda) cuda::reserve_rmsnorm_backward(N, D);
}

void reserve_router_aux_losses(Device device, int64_t N, int64_t T, int64_t E) {
  if (device == Device::kCuda) cuda::reserve_router_aux_losses(N, T, E);
}

}  // namespace moe::ops
