#include "src/kernels/op_check.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>

#include "src/core/bf16.h"
#include "src/core/tensor_pool.h"
#include "src/kernels/cpu/cpu_ops.h"
#include "src/kernels/gpu_kernels.h"
#include "src/kernels/kernel_choice.h"
#include "src/kernels/ops.h"

#if MOE_TRAIN_HAS_CUDA
#include <cuda_runtime.h>

#include "src/core/cuda_stream.h"
#endif

namespace moe::op_check {
namespace {

// |got - want| <= atol + rtol |want|; with of_max, atol is that fraction of
// the largest |want| of the output (for ops whose error scales with it).
struct Tol {
  double rtol = 0, atol = 0;
  bool of_max = false;
};
constexpr Tol kExact{0, 0};

std::string tol_text(const Tol& t) {
  if (t.rtol == 0 && t.atol == 0) return "exact";
  std::ostringstream s;
  s << "rtol " << t.rtol << ", atol " << t.atol << (t.of_max ? " x max" : "");
  return s.str();
}

// Where a tensor's dtype comes from: the activations' (F32 or BF16), or fixed.
enum class Kind { kAct, kF32, kBF16, kI32 };

// One side of a check: the host (CPU reference) or the device. Both run the
// same case body; values come from seeds in call order, so they agree.
class Side {
 public:
  Side(Device device, DType act) : pool_(device), device_(device), act_(act) {}

  DType act() const { return act_; }
  DType dtype(Kind k) const {
    switch (k) {
      case Kind::kAct: return act_;
      case Kind::kF32: return DType::kF32;
      case Kind::kBF16: return DType::kBF16;
      case Kind::kI32: break;
    }
    return DType::kI32;
  }
  // For tolerances: the F32 one, or rtol 1e-2 when `k` is BF16 here.
  Tol tol(Kind k, Tol f32) const { return dtype(k) == DType::kBF16 ? Tol{1e-2, f32.atol, f32.of_max} : f32; }

  std::vector<float> gaussian(int64_t n, float scale) {
    std::mt19937 gen(static_cast<uint32_t>(1000 + seed_++));
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = dist(gen);
    return v;
  }
  std::vector<float> uniform(int64_t n, float lo, float hi) {
    std::mt19937 gen(static_cast<uint32_t>(1000 + seed_++));
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = dist(gen);
    return v;
  }
  std::vector<int32_t> ids(int64_t n, int32_t hi) {
    std::mt19937 gen(static_cast<uint32_t>(1000 + seed_++));
    std::uniform_int_distribution<int32_t> dist(0, hi - 1);
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (int32_t& x : v) x = dist(gen);
    return v;
  }
  // What a tensor of `kind` holds after `values` are stored in it (bf16 rounds).
  std::vector<float> stored(Kind kind, std::vector<float> values) const {
    if (dtype(kind) == DType::kBF16)
      for (float& x : values) x = bf16_to_f32(f32_to_bf16(x));
    return values;
  }

  Tensor tensor(const std::vector<int64_t>& shape, Kind kind, const std::vector<float>& values) {
    const Tensor t = pool_.alloc_shape(shape, dtype(kind));
    if (static_cast<int64_t>(values.size()) != t.numel())
      throw std::logic_error("op_check: values for " + t.shape_string());
    if (t.dtype == DType::kBF16) {
      std::vector<uint16_t> bits(values.size());
      for (size_t i = 0; i < values.size(); ++i) bits[i] = f32_to_bf16(values[i]);
      upload(t, bits.data());
    } else {
      upload(t, values.data());
    }
    return t;
  }
  Tensor randn(const std::vector<int64_t>& shape, Kind kind, float scale = 1.0f) {
    return tensor(shape, kind, gaussian(numel_of(shape), scale));
  }
  Tensor i32(const std::vector<int64_t>& shape, const std::vector<int32_t>& values) {
    const Tensor t = pool_.alloc_shape(shape, DType::kI32);
    if (static_cast<int64_t>(values.size()) != t.numel())
      throw std::logic_error("op_check: ids for " + t.shape_string());
    upload(t, values.data());
    return t;
  }
  Tensor zeros(const std::vector<int64_t>& shape, Kind kind) { return pool_.alloc_shape(shape, dtype(kind)); }

  // The op under test; on the device, timed to the end of its work.
  void run(const std::function<void()>& op) {
    sync();
    const auto start = std::chrono::steady_clock::now();
    op();
    sync();
    ms_ += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  }

  struct Output {
    std::string name;
    Tensor t;
    Tol tol;
    std::vector<double> scalar;  // for ops that return a value
  };
  void output(const std::string& name, const Tensor& t, Tol tol) { outputs_.push_back({name, t, tol, {}}); }
  void output(const std::string& name, double value, Tol tol) { outputs_.push_back({name, Tensor{}, tol, {value}}); }

  const std::vector<Output>& outputs() const { return outputs_; }
  double ms() const { return ms_; }

  // An output's values as doubles (a host sync for device tensors).
  static std::vector<double> values(const Output& o) {
    if (!o.scalar.empty()) return o.scalar;
    const Tensor& t = o.t;
    std::vector<double> out(static_cast<size_t>(t.numel()));
    if (t.dtype == DType::kI32) {
      std::vector<int32_t> v(out.size());
      download(v.data(), t);
      std::copy(v.begin(), v.end(), out.begin());
    } else if (t.dtype == DType::kBF16) {
      std::vector<uint16_t> v(out.size());
      download(v.data(), t);
      for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_f32(v[i]);
    } else {
      std::vector<float> v(out.size());
      download(v.data(), t);
      std::copy(v.begin(), v.end(), out.begin());
    }
    return out;
  }

 private:
  void sync() const {
#if MOE_TRAIN_HAS_CUDA
    if (device_ == Device::kCuda) {
      const cudaError_t e = cudaStreamSynchronize(cuda::stream());
      if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(e));
    }
#endif
  }

  TensorPool pool_;
  Device device_;
  DType act_;
  int seed_ = 0;
  double ms_ = 0;
  std::vector<Output> outputs_;
};

struct Case {
  std::string op, shape;
  bool act_dependent;  // false: one run, its dtype fixed by the op
  std::function<void(Side&)> body;
};

std::string dims(std::initializer_list<int64_t> d) { return shape_text(std::vector<int64_t>(d)); }

// The routing of a case's tokens, computed on the host (the same on both
// sides) so that the MoE ops downstream of the router get identical inputs.
struct Routing {
  std::vector<float> logits, scores, topk_w;
  std::vector<int32_t> topk_idx, offsets, row_pair, pair_row;
  int64_t M = 0;
};

Routing route(Side& s, const Shapes& sh, cpu::RouterKind kind) {
  const int64_t N = sh.N(), E = sh.experts, K = sh.top_k;
  Routing r;
  r.logits = s.gaussian(N * E, 1.0f);
  r.scores.resize(static_cast<size_t>(N * E));
  r.topk_w.resize(static_cast<size_t>(N * K));
  r.topk_idx.resize(static_cast<size_t>(N * K));
  cpu::router_forward(r.topk_idx.data(), r.topk_w.data(), r.scores.data(), r.logits.data(), nullptr, N, E, K, kind);
  r.offsets.resize(static_cast<size_t>(E + 1));
  r.row_pair.resize(static_cast<size_t>(N * K));
  r.pair_row.resize(static_cast<size_t>(N * K));
  const int64_t capacity = static_cast<int64_t>(std::ceil(sh.capacity_factor * N * K / E));
  cpu::moe_plan(r.offsets.data(), r.row_pair.data(), r.pair_row.data(), r.topk_idx.data(), N, E, K, capacity);
  r.M = r.offsets.back();
  return r;
}

// The router and the MoE dispatch: routing from the host (route()), so every
// op sees the same plan on both sides.
std::vector<Case> moe_cases(const Shapes& sh) {
  const int64_t N = sh.N(), D = sh.dim, E = sh.experts, K = sh.top_k, Fe = sh.expert_hidden, T = sh.T;
  const Kind A = Kind::kAct, F32 = Kind::kF32;
  const Tol f32_5{1e-5, 1e-5}, router{1e-5, 1e-6};
  const std::string ne = dims({N, E}) + " top-" + std::to_string(K);
  std::vector<Case> c;
  for (const cpu::RouterKind kind : {cpu::RouterKind::kSoftmaxTopK, cpu::RouterKind::kSigmoidTopK}) {
    const std::string which = kind == cpu::RouterKind::kSoftmaxTopK ? " softmax" : " sigmoid";
    c.push_back(
        {"router_forward", ne + which, false, [=](Side& s) {
           const Tensor idx = s.zeros({N, K}, Kind::kI32), w = s.zeros({N, K}, F32), scores = s.zeros({N, E}, F32);
           const Tensor logits = s.randn({N, E}, F32);
           const Tensor bias = kind == cpu::RouterKind::kSigmoidTopK ? s.randn({E}, F32, 0.01f) : Tensor{};
           s.run([&] { ops::router_forward(idx, w, scores, logits, bias, kind); });
           s.output("topk_idx", idx, kExact);
           s.output("topk_w", w, router);
           s.output("scores", scores, router);
         }});
    c.push_back({"router_backward", ne + which, false, [=](Side& s) {
                   const Routing r = route(s, sh, kind);
                   const Tensor dlogits = s.randn({N, E}, F32), dw = s.randn({N, K}, F32);
                   const Tensor idx = s.i32({N, K}, r.topk_idx), w = s.tensor({N, K}, F32, r.topk_w);
                   const Tensor scores = s.tensor({N, E}, F32, r.scores);
                   s.run([&] { ops::router_backward(dlogits, dw, idx, w, scores, kind); });
                   s.output("dlogits", dlogits, router);
                 }});
    c.push_back(
        {"router_aux_losses", ne + which + ", T=" + std::to_string(T), false, [=](Side& s) {
           const Routing r = route(s, sh, kind);
           const Tensor aux = s.zeros({3}, F32), daux = s.zeros({N, E}, F32);
           const Tensor logits = s.tensor({N, E}, F32, r.logits), scores = s.tensor({N, E}, F32, r.scores);
           const Tensor idx = s.i32({N, K}, r.topk_idx);
           s.run([&] { ops::router_aux_losses(aux, daux, logits, scores, idx, T, kind, 0.01f, 0.001f, 0.001f, 1.0f); });
           s.output("aux", aux, router);
           s.output("daux_logits", daux, Tol{1e-5, 1e-9});
         }});
  }
  c.push_back({"moe_plan", ne + ", capacity " + std::to_string(sh.capacity_factor), false, [=](Side& s) {
                 const Routing r = route(s, sh, cpu::RouterKind::kSoftmaxTopK);
                 const int64_t capacity = static_cast<int64_t>(std::ceil(sh.capacity_factor * N * K / E));
                 const Tensor offsets = s.zeros({E + 1}, Kind::kI32), row_pair = s.zeros({N * K}, Kind::kI32);
                 const Tensor pair_row = s.zeros({N, K}, Kind::kI32), idx = s.i32({N, K}, r.topk_idx);
                 s.run([&] { ops::moe_plan(offsets, row_pair, pair_row, idx, capacity); });
                 s.output("offsets", offsets, kExact);
                 s.output("pair_row", pair_row, kExact);  // row_pair past M is scratch on the GPU
               }});
  c.push_back({"moe_count_experts", ne, false, [=](Side& s) {
                 const Routing r = route(s, sh, cpu::RouterKind::kSoftmaxTopK);
                 const Tensor routed = s.i32({E}, std::vector<int32_t>(static_cast<size_t>(E), 3));
                 const Tensor kept = s.i32({E}, std::vector<int32_t>(static_cast<size_t>(E), 5));
                 const Tensor idx = s.i32({N, K}, r.topk_idx), offsets = s.i32({E + 1}, r.offsets);
                 s.run([&] { ops::moe_count_experts(routed, kept, idx, offsets); });
                 s.output("routed", routed, kExact);
                 s.output("kept", kept, kExact);
               }});
  const std::string nd = dims({N, D}) + " top-" + std::to_string(K) + " of " + std::to_string(E);
  c.push_back({"moe_permute", nd, true, [=](Side& s) {
                 const Routing r = route(s, sh, cpu::RouterKind::kSoftmaxTopK);
                 const Tensor xs = s.zeros({N * K, D}, A), x = s.randn({N, D}, A), pr = s.i32({N, K}, r.pair_row);
                 s.run([&] { ops::moe_permute(xs, x, pr); });
                 s.output("xs", xs, kExact);
               }});
  c.push_back({"moe_permute_backward", nd, true, [=](Side& s) {
                 const Routing r = route(s, sh, cpu::RouterKind::kSoftmaxTopK);
                 const Tensor dx = s.randn({N, D}, A), dxs = s.randn({N * K, D}, A), pr = s.i32({N, K}, r.pair_row);
                 s.run([&] { ops::moe_permute_backward(dx, dxs, pr); });
                 s.output("dx", dx, s.tol(A, Tol{1e-6, 1e-6}));
               }});
  c.push_back({"gather_rows", dims({N * K, D}), true, [=](Side& s) {
                 std::vector<int32_t> index(static_cast<size_t>(N * K));
                 std::iota(index.begin(), index.end(), 0);
                 std::mt19937 gen(7);
                 std::shuffle(index.begin(), index.end(), gen);
                 const Tensor dst = s.zeros({N * K, D}, A), src = s.randn({N * K, D}, A), idx = s.i32({N * K}, index);
                 s.run([&] { ops::gather_rows(dst, src, idx); });
                 s.output("dst", dst, kExact);
               }});
  c.push_back({"moe_unpermute", nd, true, [=](Side& s) {
                 const Routing r = route(s, sh, cpu::RouterKind::kSoftmaxTopK);
                 const Tensor out = s.zeros({N, D}, A), ys = s.randn({N * K, D}, A);
                 const Tensor w = s.tensor({N, K}, F32, r.topk_w), pr = s.i32({N, K}, r.pair_row);
                 s.run([&] { ops::moe_unpermute(out, ys, w, pr); });
                 s.output("out", out, s.tol(A, f32_5));
               }});
  c.push_back({"moe_unpermute_backward", nd, true, [=](Side& s) {
                 const Routing r = route(s, sh, cpu::RouterKind::kSoftmaxTopK);
                 const Tensor dys = s.zeros({N * K, D}, A), dw = s.randn({N, K}, F32), dout = s.randn({N, D}, A);
                 const Tensor ys = s.randn({N * K, D}, A), w = s.tensor({N, K}, F32, r.topk_w);
                 const Tensor pr = s.i32({N, K}, r.pair_row);
                 s.run([&] { ops::moe_unpermute_backward(dys, dw, dout, ys, w, pr); });
                 s.output("dys", dys, s.tol(A, f32_5));
                 s.output("dtopk_w", dw, Tol{1e-4, 1e-4});
               }});
  const std::string gm = std::to_string(E) + " x " + dims({D, Fe}) + ", " + std::to_string(N * K) + " rows";
  const float w_scale = 1.0f / std::sqrt(static_cast<float>(D));
  c.push_back({"grouped_matmul_forward", gm, true, [=](Side& s) {
                 const Routing r = route(s, sh, cpu::RouterKind::kSoftmaxTopK);
                 const Tensor out = s.zeros({N * K, Fe}, A), x = s.randn({N * K, D}, A);
                 const Tensor w = s.randn({E, D, Fe}, A, w_scale), offsets = s.i32({E + 1}, r.offsets);
                 s.run([&] { ops::grouped_matmul_forward(out, x, w, offsets); });
                 s.output("out", out, s.tol(A, Tol{1e-4, 1e-5}));
               }});
  c.push_back(
      {"grouped_matmul_backward", gm, true, [=](Side& s) {
         const Routing r = route(s, sh, cpu::RouterKind::kSoftmaxTopK);
         const Tensor dx = s.randn({N * K, D}, A), dw = s.randn({E, D, Fe}, F32), dout = s.randn({N * K, Fe}, A);
         const Tensor x = s.randn({N * K, D}, A), w = s.randn({E, D, Fe}, A, w_scale);
         const Tensor offsets = s.i32({E + 1}, r.offsets);
         s.run([&] { ops::grouped_matmul_backward(dx, dw, dout, x, w, offsets); });
         s.output("dx", dx, s.tol(A, Tol{1e-4, 1e-5}));
         s.output("dw", dw, Tol{1e-4, 1e-4 * std::sqrt(static_cast<double>(N))});
       }});
  return c;
}

// The fused optimizer ops over a list of parameters of the model's shapes,
// one with a bf16 compute copy; against the same ops on host tensors, which
// are the per-tensor CPU ops.
std::vector<Case> optimizer_cases(const Shapes& sh) {
  const int64_t D = sh.dim, F = sh.hidden, V = sh.vocab;
  const Kind F32 = Kind::kF32;
  const std::string list = dims({V, D}) + ", " + dims({F, D}) + ", " + dims({D});
  std::vector<Case> c;
  c.push_back({"sum_squares_many", list, false, [=](Side& s) {
                 const std::vector<Tensor> xs = {s.randn({V, D}, F32), s.randn({F, D}, F32), s.randn({D}, F32)};
                 double r = 0;
                 s.run([&] { r = ops::sum_squares_many(xs); });
                 s.output("sum", r, Tol{1e-9, 0});
               }});
  c.push_back({"adamw_step_many", list, false, [=](Side& s) {
                 std::vector<ops::AdamWSlot> slots;
                 int i = 0;
                 for (const std::vector<int64_t>& shape : {std::vector<int64_t>{V, D}, {F, D}, {D}}) {
                   ops::AdamWSlot slot;
                   slot.param = s.randn(shape, F32);
                   slot.grad = s.randn(shape, F32);
                   slot.m = s.randn(shape, F32, 0.1f);
                   slot.v = s.tensor(shape, F32, s.uniform(numel_of(shape), 0.0f, 0.01f));
                   slot.weight_decay = shape.size() > 1 ? 0.1f : 0.0f;
                   if (i++ == 1) slot.compute = s.zeros(shape, Kind::kBF16);
                   slots.push_back(slot);
                 }
                 s.run([&] {
                   for (int64_t step = 1; step <= 3; ++step)
                     ops::adamw_step_many(slots, {1e-3f, 0.9f, 0.95f, 1e-8f}, step, 0.5f);
                 });
                 for (const ops::AdamWSlot& slot : slots) {
                   s.output("param", slot.param, Tol{1e-6, 1e-10});
                   s.output("m", slot.m, Tol{1e-6, 1e-10});
                   s.output("v", slot.v, Tol{1e-6, 1e-10});
                   if (slot.compute.data) s.output("compute", slot.compute, Tol{1e-2, 1e-10});
                 }
               }});
  return c;
}

std::vector<Case> cases(const Shapes& sh) {
  const int64_t B = sh.B, T = sh.T, N = sh.N(), D = sh.dim, H = sh.heads, G = sh.kv_heads, Dh = sh.head_dim;
  const int64_t F = sh.hidden, V = sh.vocab;
  const Kind A = Kind::kAct, F32 = Kind::kF32;
  const Tol f32_5{1e-5, 1e-5}, f32_4{1e-4, 1e-5}, sums{1e-4, 1e-4};
  const float w_scale_D = 1.0f / std::sqrt(static_cast<float>(D));
  std::vector<Case> c;

  c.push_back({"embedding_forward", dims({N, D}) + " of " + dims({V, D}), true, [=](Side& s) {
                 const Tensor out = s.zeros({N, D}, A), table = s.randn({V, D}, A),
                              tokens = s.i32({N}, s.ids(N, static_cast<int32_t>(V)));
                 s.run([&] { ops::embedding_forward(out, tokens, table); });
                 s.output("out", out, kExact);
               }});
  c.push_back({"embedding_backward", dims({N, D}) + " into " + dims({V, D}), true, [=](Side& s) {
                 const Tensor dtable = s.randn({V, D}, F32), dout = s.randn({N, D}, A);
                 const Tensor tokens = s.i32({N}, s.ids(N, static_cast<int32_t>(V)));
                 s.run([&] { ops::embedding_backward(dtable, dout, tokens); });
                 s.output("dtable", dtable, Tol{1e-6, 1e-6});
               }});
  c.push_back({"rmsnorm_forward", dims({N, D}), true, [=](Side& s) {
                 const Tensor out = s.zeros({N, D}, A), rstd = s.zeros({N}, F32);
                 const Tensor x = s.randn({N, D}, A, 2.0f), w = s.randn({D}, A);
                 s.run([&] { ops::rmsnorm_forward(out, rstd, x, w, 1e-5f); });
                 s.output("out", out, s.tol(A, f32_5));
                 s.output("rstd", rstd, f32_5);
               }});
  c.push_back({"add_rmsnorm_forward", dims({N, D}), true, [=](Side& s) {
                 const Tensor sum = s.zeros({N, D}, A), out = s.zeros({N, D}, A), rstd = s.zeros({N}, F32);
                 const Tensor x = s.randn({N, D}, A, 2.0f), y = s.randn({N, D}, A), w = s.randn({D}, A);
                 s.run([&] { ops::add_rmsnorm_forward(sum, out, rstd, x, y, w, 1e-5f); });
                 s.output("sum", sum, kExact);
                 s.output("out", out, s.tol(A, f32_5));
                 s.output("rstd", rstd, f32_5);
               }});
  c.push_back({"rmsnorm_backward", dims({N, D}), true, [=](Side& s) {
                 const Tensor dx = s.randn({N, D}, A), dw = s.randn({D}, F32), dout = s.randn({N, D}, A);
                 const Tensor x = s.randn({N, D}, A, 2.0f), w = s.randn({D}, A), dres = s.randn({N, D}, A);
                 const Tensor rstd = s.tensor({N}, F32, s.uniform(N, 0.5f, 1.5f));
                 s.run([&] { ops::rmsnorm_backward(dx, dw, dout, x, w, rstd, dres); });
                 s.output("dx", dx, s.tol(A, f32_5));
                 s.output("dw", dw, sums);
               }});
  c.push_back({"matmul_forward", dims({N, D}) + " x " + dims({F, D}) + "^T", true, [=](Side& s) {
                 const Tensor out = s.zeros({N, F}, A), x = s.randn({N, D}, A), w = s.randn({F, D}, A, w_scale_D);
                 s.run([&] { ops::matmul_forward(out, x, w); });
                 s.output("out", out, s.tol(A, f32_4));
               }});
  c.push_back({"matmul_backward", dims({N, F}) + " -> " + dims({N, D}) + ", " + dims({F, D}), true, [=](Side& s) {
                 const Tensor dx = s.randn({N, D}, A), dw = s.randn({F, D}, F32), dout = s.randn({N, F}, A);
                 const Tensor x = s.randn({N, D}, A), w = s.randn({F, D}, A, w_scale_D);
                 s.run([&] { ops::matmul_backward(dx, dw, dout, x, w); });
                 s.output("dx", dx, s.tol(A, f32_4));
                 s.output("dw", dw, Tol{1e-4, 1e-4 * std::sqrt(static_cast<double>(N))});
               }});
  c.push_back(
      {"matmul_backward", dims({N, F}) + " -> " + dims({N, D}) + " written, " + dims({F, D}), true, [=](Side& s) {
         const Tensor dx = s.randn({N, D}, A), dw = s.randn({F, D}, F32), dout = s.randn({N, F}, A);
         const Tensor x = s.randn({N, D}, A), w = s.randn({F, D}, A, w_scale_D);
         s.run([&] { ops::matmul_backward(dx, dw, dout, x, w, ops::GradInto::kWrite); });
         s.output("dx", dx, s.tol(A, f32_4));
         s.output("dw", dw, Tol{1e-4, 1e-4 * std::sqrt(static_cast<double>(N))});
       }});
  for (const bool backward : {false, true}) {
    c.push_back({backward ? "rope_backward" : "rope_forward", dims({B, T, H, Dh}), true, [=](Side& s) {
                   const Tensor x = s.randn({B, T, H, Dh}, A);
                   s.run([&] { backward ? ops::rope_backward(x, 10000.0f) : ops::rope_forward(x, 10000.0f); });
                   s.output("x", x, s.tol(A, f32_5));
                 }});
  }
  // Generation rotates one row at its position.
  c.push_back({"rope_forward", dims({1, 1, H, Dh}) + " at position " + std::to_string(T - 1), true, [=](Side& s) {
                 const Tensor x = s.randn({1, 1, H, Dh}, A);
                 s.run([&] { ops::rope_forward(x, 10000.0f, T - 1); });
                 s.output("x", x, s.tol(A, f32_5));
               }});
  // Attention: atol a fraction of the largest value (attention_gpu_test's rule).
  const Tol att{1e-4, 1e-4, true}, att_bf16{2e-2, 2e-2, true};
  c.push_back({"attention_decode", "q " + dims({H, Dh}) + ", cache " + dims({T, G, Dh}), true, [=](Side& s) {
                 const Tol tol = s.act() == DType::kBF16 ? att_bf16 : att;
                 const Tensor out = s.zeros({H, Dh}, A), q = s.randn({H, Dh}, A);
                 const Tensor k = s.randn({T, G, Dh}, A), v = s.randn({T, G, Dh}, A);
                 s.run([&] { ops::attention_decode(out, q, k, v, T); });
                 s.output("out", out, tol);
               }});
  c.push_back(
      {"attention_forward", "q " + dims({B, T, H, Dh}) + ", kv " + dims({B, T, G, Dh}), true, [=](Side& s) {
         const Tol tol = s.act() == DType::kBF16 ? att_bf16 : att;
         const Tensor out = s.zeros({B, T, H, Dh}, A), lse = s.zeros({B, H, T}, F32);
         const Tensor q = s.randn({B, T, H, Dh}, A), k = s.randn({B, T, G, Dh}, A), v = s.randn({B, T, G, Dh}, A);
         s.run([&] { ops::attention_forward(out, lse, q, k, v); });
         s.output("out", out, tol);
         s.output("lse", lse, Tol{1e-4, s.act() == DType::kBF16 ? 1e-3 : 1e-4});
       }});
  c.push_back(
      {"attention_backward", "q " + dims({B, T, H, Dh}) + ", kv " + dims({B, T, G, Dh}), true, [=](Side& s) {
         const Tol tol = s.act() == DType::kBF16 ? att_bf16 : att;
         // out and lse from the CPU's forward on the stored inputs: the same on both sides.
         const std::vector<float> q = s.stored(A, s.gaussian(B * T * H * Dh, 1.0f));
         const std::vector<float> k = s.stored(A, s.gaussian(B * T * G * Dh, 1.0f));
         const std::vector<float> v = s.stored(A, s.gaussian(B * T * G * Dh, 1.0f));
         std::vector<float> out(q.size()), lse(static_cast<size_t>(B * H * T));
         cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), B, T, H, G, Dh);
         const Tensor tq = s.tensor({B, T, H, Dh}, A, q), tk = s.tensor({B, T, G, Dh}, A, k);
         const Tensor tv = s.tensor({B, T, G, Dh}, A, v), tout = s.tensor({B, T, H, Dh}, A, out);
         const Tensor tlse = s.tensor({B, H, T}, F32, lse), dout = s.randn({B, T, H, Dh}, A);
         const Tensor dq = s.zeros({B, T, H, Dh}, A), dk = s.zeros({B, T, G, Dh}, A), dv = s.zeros({B, T, G, Dh}, A);
         s.run([&] { ops::attention_backward(dq, dk, dv, dout, tq, tk, tv, tout, tlse); });
         s.output("dq", dq, tol);
         s.output("dk", dk, tol);
         s.output("dv", dv, tol);
       }});
  c.push_back({"swiglu_forward", dims({N, F}), true, [=](Side& s) {
                 const Tensor out = s.zeros({N, F}, A), a = s.randn({N, F}, A, 2.0f), b = s.randn({N, F}, A);
                 s.run([&] { ops::swiglu_forward(out, a, b); });
                 s.output("out", out, s.tol(A, Tol{1e-5, 1e-6}));
               }});
  c.push_back({"swiglu_backward", dims({N, F}), true, [=](Side& s) {
                 const Tensor da = s.randn({N, F}, A), db = s.randn({N, F}, A), dout = s.randn({N, F}, A);
                 const Tensor a = s.randn({N, F}, A, 2.0f), b = s.randn({N, F}, A);
                 s.run([&] { ops::swiglu_backward(da, db, dout, a, b); });
                 s.output("da", da, s.tol(A, f32_5));
                 s.output("db", db, s.tol(A, f32_5));
               }});
  c.push_back({"cross_entropy_forward_backward", dims({N, V}), true, [=](Side& s) {
                 const Tensor loss = s.zeros({N}, F32), dlogits = s.zeros({N, V}, A), logits = s.randn({N, V}, A, 3.0f);
                 const Tensor targets = s.i32({N}, s.ids(N, static_cast<int32_t>(V)));
                 s.run([&] { ops::cross_entropy_forward_backward(loss, dlogits, logits, targets, 1.0f / N); });
                 s.output("loss", loss, f32_5);
                 s.output("dlogits", dlogits, s.tol(A, Tol{1e-5, 1e-9}));
               }});
  c.push_back({"add", dims({N, D}), true, [=](Side& s) {
                 const Tensor out = s.zeros({N, D}, A), a = s.randn({N, D}, A), b = s.randn({N, D}, A);
                 s.run([&] { ops::add(out, a, b); });
                 s.output("out", out, kExact);
               }});
  c.push_back({"scale_inplace", dims({N, D}), true, [=](Side& s) {
                 const Tensor x = s.randn({N, D}, A);
                 s.run([&] { ops::scale_inplace(x, 0.375f); });
                 s.output("x", x, kExact);
               }});
  c.push_back({"cast", dims({N, D}) + " f32 -> bf16 -> f32", false, [=](Side& s) {
                 const Tensor f = s.randn({N, D}, F32), b = s.zeros({N, D}, Kind::kBF16), back = s.zeros({N, D}, F32);
                 s.run([&] {
                   ops::cast(b, f);
                   ops::cast(back, b);
                 });
                 s.output("bf16", b, kExact);
                 s.output("f32", back, kExact);
               }});
  c.push_back({"sum_squares", dims({N, D}), true, [=](Side& s) {
                 const Tensor x = s.randn({N, D}, A);
                 double r = 0;
                 s.run([&] { r = ops::sum_squares(x); });
                 s.output("sum", r, Tol{1e-9, 0});
               }});
  c.push_back({"adamw_step", dims({D, F}), false, [=](Side& s) {
                 const Tensor p = s.randn({D, F}, F32), g = s.randn({D, F}, F32), m = s.randn({D, F}, F32, 0.1f);
                 const Tensor v = s.tensor({D, F}, F32, s.uniform(D * F, 0.0f, 0.01f));
                 s.run([&] {
                   for (int64_t step = 1; step <= 3; ++step)
                     ops::adamw_step(p, g, m, v, {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f}, step, 0.5f);
                 });
                 for (auto [name, t] : {std::pair<const char*, Tensor>{"param", p}, {"m", m}, {"v", v}})
                   s.output(name, t, Tol{1e-6, 1e-10});
               }});
  for (const Case& m : optimizer_cases(sh)) c.push_back(m);
  for (const Case& m : moe_cases(sh)) c.push_back(m);
  return c;
}

}  // namespace

std::string Shapes::text() const {
  std::ostringstream s;
  s << "B=" << B << " T=" << T << " D=" << dim << " H=" << heads << "/" << kv_heads << "x" << head_dim
    << " F=" << hidden << " V=" << vocab << " E=" << experts << " K=" << top_k << " Fe=" << expert_hidden;
  return s.str();
}

std::vector<Result> check_ops(const Shapes& shapes, DType act) {
  std::vector<Result> results;
  for (const Case& c : cases(shapes)) {
    if (!c.act_dependent && act != DType::kF32) continue;
    Result r;
    r.op = c.op;
    r.shape = c.shape;
    r.dtype = c.act_dependent ? dtype_name(act) : "f32";
    try {
      // The kernel the device side runs, where a vendor's may (gpu_kernels.h).
      const std::string family = kernels::vendor_family(c.op);
      const kernels::Choice* choice = nullptr;
      if (family == kernels::kAttentionFamily) {
        choice = &kernels::attention_choice({shapes.B, shapes.T, shapes.heads, shapes.kv_heads, shapes.head_dim, act});
      } else if (family == kernels::kExpertGemmFamily) {
        choice = &kernels::expert_gemm_choice({shapes.experts, shapes.dim, shapes.expert_hidden, act});
      }
      if (choice != nullptr) {
        r.implementation = choice->implementation;
        r.vendor = choice->vendor;
      }
      Side host(Device::kCpu, act), device(Device::kCuda, act);
      c.body(host);
      c.body(device);
      r.ms = device.ms();
      r.passed = true;
      for (size_t o = 0; o < host.outputs().size(); ++o) {
        const Side::Output& ho = host.outputs()[o];
        const std::vector<double> want = Side::values(ho), got = Side::values(device.outputs()[o]);
        double amax = 0;
        for (double w : want) amax = std::max(amax, std::fabs(w));
        const double atol = ho.tol.of_max ? ho.tol.atol * amax : ho.tol.atol;
        for (size_t i = 0; i < want.size(); ++i) {
          const double err = std::fabs(got[i] - want[i]);
          const double bound = atol + ho.tol.rtol * std::fabs(want[i]);
          double ratio = bound > 0 ? err / bound : (err > 0 ? std::numeric_limits<double>::infinity() : 0.0);
          if (std::isnan(got[i]) != std::isnan(want[i])) ratio = std::numeric_limits<double>::infinity();
          if (std::isnan(got[i]) && std::isnan(want[i])) ratio = 0;
          if (ratio > r.worst || r.tolerance.empty()) {
            r.worst = ratio;
            r.tolerance = tol_text(ho.tol);
          }
          if (!std::isnan(err)) r.max_error = std::max(r.max_error, err);
          if (ratio > 1 && r.passed) {
            r.passed = false;
            std::ostringstream d;
            d << ho.name << "[" << i << "] = " << got[i] << ", the CPU gives " << want[i];
            r.detail = d.str();
          }
        }
      }
    } catch (const std::exception& e) {
      r.passed = false;
      r.detail = e.what();
    }
    results.push_back(std::move(r));
  }
  return results;
}

}  // namespace moe::op_check
