// The op table's dense and optimizer rows (op_table.h): embedding, norms,
// GEMMs, RoPE, attention, SwiGLU, loss, elementwise, casts, AdamW.
//
// Tolerances, |got - want| <= atol + rtol |want|: exact for copies, integers
// and single IEEE ops (add, scale, the sum of add_rmsnorm, casts); F32
// outputs rtol 1e-5 to 1e-4 (another summation order; expf, sincosf and
// sqrtf differ from glibc by an ulp or two); BF16 outputs rtol 1e-2
// (Side::tol); sums over rows (dw) a fraction of the largest value; attention
// 1e-4 of the largest value (2e-2 in bf16: P and dS in bf16 for the tensor
// cores).
#include <cmath>
#include <limits>

#include "src/kernels/cpu/cpu_ops.h"
#include "src/kernels/op_table.h"
#include "src/kernels/ops.h"

namespace moe::op_check {
namespace {

const Kind A = Kind::kAct, A1 = Kind::kAct1, A2 = Kind::kAct2, A3 = Kind::kAct3, F32 = Kind::kF32;
const Tol f32_5{1e-5, 1e-5}, f32_4{1e-4, 1e-5};
const Tol row_sums{1e-5, 1e-5, true};  // dw: a sum over N rows, in another order

// Token ids with repeats and both ends of the vocabulary.
std::vector<int32_t> tokens_of(Side& s, int64_t N, int64_t V) {
  std::vector<int32_t> t = s.ids(N, static_cast<int32_t>(V));
  t[0] = 0;
  if (N > 1) t[1] = static_cast<int32_t>(V - 1);
  if (N > 3) t[N - 1] = t[N / 2] = t[2];
  return t;
}

// SwiGLU gates with the extremes: exp(100) overflows (sigmoid 0, not NaN).
std::vector<float> gates_of(Side& s, int64_t n) {
  std::vector<float> a = s.gaussian(n, 3.0f);
  const float extremes[] = {-100.0f, 100.0f, 0.0f};
  for (size_t i = 0; i < 3 && i < a.size(); ++i) a[i] = extremes[i];
  return a;
}

void embedding_and_norm_cases(std::vector<Case>& c, const Shapes& sh) {
  const int64_t N = sh.N(), D = sh.dim, V = sh.vocab;
  c.push_back({"embedding_forward", dims({N, D}) + " of " + dims({V, D}), 2, [=](Side& s) {
                 const Tensor out = s.zeros({N, D}, A1), table = s.randn({V, D}, A);
                 const Tensor tokens = s.i32({N}, tokens_of(s, N, V));
                 s.run([&] { ops::embedding_forward(out, tokens, table); });
                 s.output("out", out, kExact);
               }});
  // The same adds in the same order as the CPU: expected bitwise.
  c.push_back({"embedding_backward", dims({N, D}) + " into " + dims({V, D}), 1,
               [=](Side& s) {
                 const Tensor dtable = s.randn({V, D}, F32), dout = s.randn({N, D}, A);
                 const Tensor tokens = s.i32({N}, tokens_of(s, N, V));
                 s.run([&] { ops::embedding_backward(dtable, dout, tokens); });
                 s.output("dtable", dtable, Tol{1e-6, 1e-6});
               },
               true});
  c.push_back({"rmsnorm_forward", dims({N, D}), 3, [=](Side& s) {
                 const Tensor out = s.zeros({N, D}, A2), rstd = s.zeros({N}, F32);
                 const Tensor x = s.randn({N, D}, A, 2.0f), w = s.randn({D}, A1);
                 s.run([&] { ops::rmsnorm_forward(out, rstd, x, w, 1e-5f); });
                 s.output("out", out, s.tol(A2, f32_5));
                 s.output("rstd", rstd, f32_5);
               }});
  // The sum is stored in x's dtype, then normalised; a block may write it over x.
  for (const bool over_x : {false, true}) {
    c.push_back({"add_rmsnorm_forward", dims({N, D}) + (over_x ? ", sum over x" : ""), 3, [=](Side& s) {
                   const Tensor out = s.zeros({N, D}, A2), rstd = s.zeros({N}, F32);
                   const Tensor x = s.randn({N, D}, A, 2.0f), y = s.randn({N, D}, A), w = s.randn({D}, A1);
                   const Tensor sum = over_x ? x : s.zeros({N, D}, A);
                   s.run([&] { ops::add_rmsnorm_forward(sum, out, rstd, x, y, w, 1e-5f); });
                   s.output("sum", sum, kExact);
                   s.output("out", out, s.tol(A2, f32_5));
                   s.output("rstd", rstd, f32_5);
                 }});
  }
  // dx = dresidual + the norm's gradient, dresidual being dx itself, another
  // tensor, or none; dw adds.
  for (const std::string residual : {"dx", "a tensor", "none"}) {
    c.push_back({"rmsnorm_backward", dims({N, D}) + ", dresidual " + residual, 4, [=](Side& s) {
                   const Tensor dx = s.randn({N, D}, A), dw = s.randn({D}, F32), dout = s.randn({N, D}, A1);
                   const Tensor x = s.randn({N, D}, A2, 2.0f), w = s.randn({D}, A3);
                   const Tensor rstd = s.tensor({N}, F32, s.uniform(N, 0.5f, 1.5f));
                   const Tensor dres = residual == "dx" ? dx : residual == "none" ? Tensor{} : s.randn({N, D}, A);
                   s.run([&] { ops::rmsnorm_backward(dx, dw, dout, x, w, rstd, dres); });
                   s.output("dx", dx, s.tol(A, f32_5));
                   s.output("dw", dw, row_sums);
                 }});
  }
}

// out = x W^T; the backward adds to dW (f32) and adds to, writes, or skips dx.
// Inputs in slot 0, out and dx in slot 1.
void matmul_cases(std::vector<Case>& c, const Shapes& sh) {
  const int64_t N = sh.N(), I = sh.dim, O = sh.hidden;
  c.push_back({"matmul_forward", dims({N, I}) + " x " + dims({O, I}) + "^T", 2,
               [=](Side& s) {
                 const std::vector<float> x = s.stored(A, s.gaussian(N * I, 1.0f));
                 const std::vector<float> w = s.stored(A, s.gaussian(O * I, 1.0f));
                 const Tensor out = s.randn({N, O}, A1), tx = s.tensor({N, I}, A, x), tw = s.tensor({O, I}, A, w);
                 s.run([&] { ops::matmul_forward(out, tx, tw); });
                 s.output("out", out, gemm_tol(s.dtype(A), s.dtype(A1)),
                          abs_products(x.data(), w.data(), N, O, I, I, 1, 1, I));
               },
               false, gemm_dtypes});
  // On rows 1.. of buffers a row longer: pointers aligned only to their
  // dtype, another cuBLASLt plan; row 0 keeps what it held.
  c.push_back({"matmul_forward", dims({N, I}) + " x " + dims({O, I}) + "^T on row views", 2,
               [=](Side& s) {
                 const std::vector<float> x = s.stored(A, s.gaussian((N + 1) * I, 1.0f));
                 const std::vector<float> w = s.stored(A, s.gaussian(O * I, 1.0f));
                 const Tensor out = s.randn({N + 1, O}, A1), tx = s.tensor({N + 1, I}, A, x);
                 const Tensor tw = s.tensor({O, I}, A, w);
                 s.run([&] { ops::matmul_forward(out.rows(1, N), tx.rows(1, N), tw); });
                 std::vector<double> mag(static_cast<size_t>(O), 0.0);  // row 0: exact
                 const std::vector<double> rows = abs_products(x.data() + I, w.data(), N, O, I, I, 1, 1, I);
                 mag.insert(mag.end(), rows.begin(), rows.end());
                 s.output("out", out, gemm_tol(s.dtype(A), s.dtype(A1)), mag);
               },
               true, gemm_dtypes});
  for (const std::string mode : {"dx +=", "dx =", "no dx"}) {
    const bool with_dx = mode != "no dx";
    c.push_back(
        {"matmul_backward", dims({N, O}) + " -> " + dims({N, I}) + ", " + dims({O, I}) + " (" + mode + ", dw +=)",
         with_dx ? 2 : 1,
         [=](Side& s) {
           const std::vector<float> x = s.stored(A, s.gaussian(N * I, 1.0f));
           const std::vector<float> w = s.stored(A, s.gaussian(O * I, 1.0f));
           const std::vector<float> dout = s.stored(A, s.gaussian(N * O, 1.0f));
           const std::vector<float> dx0 = s.stored(A1, s.gaussian(N * I, 1.0f)), dw0 = s.gaussian(O * I, 1.0f);
           const Tensor tx = s.tensor({N, I}, A, x), tw = s.tensor({O, I}, A, w), tdout = s.tensor({N, O}, A, dout);
           const Tensor dx = with_dx ? s.tensor({N, I}, A1, dx0) : Tensor{}, dw = s.tensor({O, I}, F32, dw0);
           const ops::GradInto into = mode == "dx =" ? ops::GradInto::kWrite : ops::GradInto::kAdd;
           s.run([&] { ops::matmul_backward(dx, dw, tdout, tx, tw, into); });
           if (with_dx) {
             std::vector<double> mag = abs_products(dout.data(), w.data(), N, I, O, O, 1, I, 1);
             if (into == ops::GradInto::kAdd) mag = plus_abs(std::move(mag), dx0);
             s.output("dx", dx, gemm_tol(s.dtype(A), s.dtype(A1)), mag);
           }
           s.output("dw", dw, gemm_tol(s.dtype(A), DType::kF32),
                    plus_abs(abs_products(dout.data(), x.data(), O, I, N, 1, O, I, 1), dw0));
         },
         false, with_dx ? std::function<bool(const std::vector<DType>&)>(gemm_dtypes) : nullptr});
  }
}

// The FP8 linear layer: the device's FP8 GEMMs against the CPU's
// quantise-dequantise (the same codes, summed in another order). Shapes
// rounded up to multiples of 16, as cuBLASLt's FP8 GEMMs need. The magnitude
// of the unquantised operands, widened by the largest rounding of E4M3 (2^-4)
// and E5M2 (2^-3).
int64_t multiple_of_16(int64_t n) { return (n + 15) / 16 * 16; }

void fp8_matmul_cases(std::vector<Case>& c, const Shapes& sh) {
  const int64_t N = multiple_of_16(sh.N()), I = multiple_of_16(sh.dim), O = multiple_of_16(sh.hidden);
  const auto widened = [](std::vector<double> m) {
    for (double& v : m) v *= 1.25;
    return m;
  };
  c.push_back({"fp8_matmul_forward", dims({N, I}) + " x " + dims({O, I}) + "^T", 2,
               [=](Side& s) {
                 const std::vector<float> x = s.stored(A, s.gaussian(N * I, 1.0f));
                 const std::vector<float> w = s.stored(A, s.gaussian(O * I, 0.05f));
                 const Tensor out = s.randn({N, O}, A1), tx = s.tensor({N, I}, A, x), tw = s.tensor({O, I}, A, w);
                 s.run([&] { ops::fp8_matmul_forward(out, tx, tw); });
                 s.output("out", out, gemm_tol(DType::kF32, s.dtype(A1)),
                          widened(abs_products(x.data(), w.data(), N, O, I, I, 1, 1, I)));
               },
               false, nullptr, true});
  for (const std::string mode : {"dx +=", "dx =", "no dx"}) {
    const bool with_dx = mode != "no dx";
    c.push_back(
        {"fp8_matmul_backward", dims({N, O}) + " -> " + dims({N, I}) + ", " + dims({O, I}) + " (" + mode + ", dw +=)",
         with_dx ? 2 : 1,
         [=](Side& s) {
           const std::vector<float> x = s.stored(A, s.gaussian(N * I, 1.0f));
           const std::vector<float> w = s.stored(A, s.gaussian(O * I, 0.05f));
           const std::vector<float> dout = s.stored(A, s.gaussian(N * O, 1e-3f));
           const std::vector<float> dx0 = s.stored(A1, s.gaussian(N * I, 1e-3f)), dw0 = s.gaussian(O * I, 1e-2f);
           const Tensor tx = s.tensor({N, I}, A, x), tw = s.tensor({O, I}, A, w), tdout = s.tensor({N, O}, A, dout);
           const Tensor dx = with_dx ? s.tensor({N, I}, A1, dx0) : Tensor{}, dw = s.tensor({O, I}, F32, dw0);
           const ops::GradInto into = mode == "dx =" ? ops::GradInto::kWrite : ops::GradInto::kAdd;
           s.run([&] { ops::fp8_matmul_backward(dx, dw, tdout, tx, tw, into); });
           if (with_dx) {
             std::vector<double> mag = widened(abs_products(dout.data(), w.data(), N, I, O, O, 1, I, 1));
             if (into == ops::GradInto::kAdd) mag = plus_abs(std::move(mag), dx0);
             s.output("dx", dx, gemm_tol(DType::kF32, s.dtype(A1)), mag);
           }
           s.output("dw", dw, gemm_tol(DType::kF32, DType::kF32),
                    plus_abs(widened(abs_products(dout.data(), x.data(), O, I, N, 1, O, I, 1)), dw0));
         },
         false, nullptr, true});
  }
}

void attention_cases(std::vector<Case>& c, const Shapes& sh) {
  const int64_t B = sh.B, T = sh.T, H = sh.heads, G = sh.kv_heads, Dh = sh.head_dim;
  for (const bool backward : {false, true}) {
    c.push_back({backward ? "rope_backward" : "rope_forward", dims({B, T, H, Dh}), 1, [=](Side& s) {
                   const Tensor x = s.randn({B, T, H, Dh}, A);
                   s.run([&] { backward ? ops::rope_backward(x, 10000.0f) : ops::rope_forward(x, 10000.0f); });
                   s.output("x", x, s.tol(A, f32_5));
                 }});
  }
  // Generation rotates one row at its position.
  c.push_back({"rope_forward", dims({1, 1, H, Dh}) + " at position " + std::to_string(T - 1), 1, [=](Side& s) {
                 const Tensor x = s.randn({1, 1, H, Dh}, A);
                 s.run([&] { ops::rope_forward(x, 10000.0f, T - 1); });
                 s.output("x", x, s.tol(A, f32_5));
               }});
  // The floor: where the exact gradient is 0 (T = 1: one key, so dS = P (dP -
  // D) cancels), both sides keep the fp32 rounding of dP and D, about 1e-6.
  const Tol att{1e-4, 1e-4, true, 4e-6}, att_bf16{2e-2, 2e-2, true, 4e-6};
  // The first `length` positions of the cache: all of it, and about half.
  for (const int64_t length : T > 1 ? std::vector<int64_t>{T, (T + 1) / 2} : std::vector<int64_t>{T}) {
    const std::string what =
        "q " + dims({H, Dh}) + ", cache " + dims({T, G, Dh}) + (length < T ? ", first " + std::to_string(length) : "");
    c.push_back({"attention_decode", what, 1, [=](Side& s) {
                   const Tol tol = s.act() == DType::kBF16 ? att_bf16 : att;
                   const Tensor out = s.randn({H, Dh}, A), q = s.randn({H, Dh}, A);
                   const Tensor k = s.randn({T, G, Dh}, A), v = s.randn({T, G, Dh}, A);
                   s.run([&] { ops::attention_decode(out, q, k, v, length); });
                   s.output("out", out, tol);
                 }});
  }
  c.push_back({"attention_forward", "q " + dims({B, T, H, Dh}) + ", kv " + dims({B, T, G, Dh}), 1, [=](Side& s) {
                 const Tol tol = s.act() == DType::kBF16 ? att_bf16 : att;
                 // Garbage in the outputs: the op must write every element.
                 const Tensor out = s.tensor({B, T, H, Dh}, A, std::vector<float>(B * T * H * Dh, 1e4f));
                 const Tensor lse = s.tensor({B, H, T}, F32, std::vector<float>(B * H * T, -1e4f));
                 const Tensor q = s.randn({B, T, H, Dh}, A), k = s.randn({B, T, G, Dh}, A);
                 const Tensor v = s.randn({B, T, G, Dh}, A);
                 s.run([&] { ops::attention_forward(out, lse, q, k, v); });
                 s.output("out", out, tol);
                 s.output("lse", lse, Tol{1e-4, s.act() == DType::kBF16 ? 1e-3 : 1e-4});
               }});
  c.push_back({"attention_backward", "q " + dims({B, T, H, Dh}) + ", kv " + dims({B, T, G, Dh}), 1,
               [=](Side& s) {
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
                 // dq, dk, dv are written over what they held; the same bits run to run.
                 const Tensor dq = s.randn({B, T, H, Dh}, A, 0.5f), dk = s.randn({B, T, G, Dh}, A, 0.5f);
                 const Tensor dv = s.randn({B, T, G, Dh}, A, 0.5f);
                 s.run([&] { ops::attention_backward(dq, dk, dv, dout, tq, tk, tv, tout, tlse); });
                 s.output("dq", dq, tol);
                 s.output("dk", dk, tol);
                 s.output("dv", dv, tol);
               },
               true});
}

void elementwise_cases(std::vector<Case>& c, const Shapes& sh) {
  const int64_t N = sh.N(), D = sh.dim, F = sh.hidden, V = sh.vocab;
  c.push_back({"swiglu_forward", dims({N, F}), 2, [=](Side& s) {
                 const Tensor out = s.zeros({N, F}, A1), a = s.tensor({N, F}, A, gates_of(s, N * F));
                 const Tensor b = s.randn({N, F}, A);
                 s.run([&] { ops::swiglu_forward(out, a, b); });
                 s.output("out", out, s.tol(A1, Tol{1e-5, 1e-6}));
               }});
  // Writes da and db.
  c.push_back({"swiglu_backward", dims({N, F}), 3, [=](Side& s) {
                 const Tensor da = s.randn({N, F}, A1), db = s.randn({N, F}, A1), dout = s.randn({N, F}, A2);
                 const Tensor a = s.tensor({N, F}, A, gates_of(s, N * F)), b = s.randn({N, F}, A);
                 s.run([&] { ops::swiglu_backward(da, db, dout, a, b); });
                 s.output("da", da, s.tol(A1, f32_5));
                 s.output("db", db, s.tol(A1, f32_5));
               }});
  // The loss is written (not added); dlogits may be the logits themselves.
  for (const bool in_place : {false, true}) {
    c.push_back({"cross_entropy_forward_backward", dims({N, V}) + (in_place ? " in place" : ""), 1, [=](Side& s) {
                   const Tensor loss = s.tensor({N}, F32, std::vector<float>(static_cast<size_t>(N), 123.0f));
                   const Tensor logits = s.randn({N, V}, A, 3.0f);
                   const Tensor dlogits = in_place ? logits : s.randn({N, V}, A);
                   const Tensor targets = s.i32({N}, tokens_of(s, N, V));
                   s.run([&] { ops::cross_entropy_forward_backward(loss, dlogits, logits, targets, 1.0f / N); });
                   s.output("loss", loss, f32_5);
                   s.output("dlogits", dlogits, s.tol(A, Tol{1e-5, 1e-9}));
                 }});
  }
  c.push_back({"add", dims({N, D}), 3, [=](Side& s) {
                 const Tensor out = s.zeros({N, D}, A), a = s.randn({N, D}, A1), b = s.randn({N, D}, A2);
                 s.run([&] { ops::add(out, a, b); });
                 s.output("out", out, kExact);
               }});
  c.push_back({"add", dims({N, D}) + " over a", 2, [=](Side& s) {
                 const Tensor a = s.randn({N, D}, A), b = s.randn({N, D}, A1);
                 s.run([&] { ops::add(a, a, b); });
                 s.output("a", a, kExact);
               }});
  c.push_back({"scale_inplace", dims({N, D}), 1, [=](Side& s) {
                 const Tensor x = s.randn({N, D}, A);
                 s.run([&] { ops::scale_inplace(x, 0.375f); });
                 s.output("x", x, kExact);
               }});
  // Counter-based noise: a micro-batch far into the run (64-bit element
  // indices), the same bits for the uniform and keep draws (one fmaf), the
  // normal's log and cos to rounding; in place too.
  const std::pair<const char*, noise::Distribution> draws[] = {{"uniform", {noise::Kind::kUniform, 0.9f, 1.1f}},
                                                               {"normal", {noise::Kind::kNormal, 0, 0}},
                                                               {"keep", {noise::Kind::kKeep, 0.75f, 0}}};
  for (const auto& [name, d] : draws) {
    for (const bool in_place : {false, true}) {
      c.push_back({"multiply_noise", dims({N, D}) + " " + name + (in_place ? " in place" : ""), 2, [=](Side& s) {
                     const Tensor x = s.randn({N, D}, A1), out = in_place ? x : s.zeros({N, D}, A);
                     const Tensor key = s.i32({noise::kKeyWords}, {-7, 12345, 3, 400000});
                     s.run([&] { ops::multiply_noise(out, x, key, 17, d); });
                     s.output("out", out, d.kind == noise::Kind::kNormal ? s.tol(A, f32_5) : kExact);
                   }});
    }
  }
  // The rows of shuffled micro-batches (three of them, as an expert's rows
  // gathered from several ranks): each row draws as its place in its own.
  c.push_back({"multiply_noise_rows", dims({N, D}) + " keep, rows of 3 micro-batches shuffled", 2, [=](Side& s) {
                 const Tensor x = s.randn({N, D}, A1), out = s.zeros({N, D}, A);
                 std::vector<int32_t> ids(static_cast<size_t>(2 * N));
                 for (int64_t r = 0; r < N; ++r) {
                   ids[2 * r] = static_cast<int32_t>(400000 + r % 3);
                   ids[2 * r + 1] = static_cast<int32_t>((r * 7 + 3) % N);
                 }
                 const Tensor row_id = s.i32({N, 2}, ids), key = s.i32({noise::kKeyWords}, {-7, 12345, 3, 9});
                 s.run([&] { ops::multiply_noise_rows(out, x, row_id, N, key, 17, {noise::Kind::kKeep, 0.75f, 0}); });
                 s.output("out", out, kExact);
               }});
  c.push_back({"noise_row_ids", dims({N}), 0, [=](Side& s) {
                 const Tensor ids = s.i32({N, 2}, std::vector<int32_t>(static_cast<size_t>(2 * N), -1));
                 const Tensor rows = s.i32({N}, s.ids(N, static_cast<int32_t>(N)));
                 const Tensor key = s.i32({noise::kKeyWords}, {1, 2, 3, 77});
                 s.run([&] { ops::noise_row_ids(ids, rows, key); });
                 s.output("ids", ids, kExact);
               }});
  // Round to nearest even, with infinities, signed zeros, a tie, the largest
  // float and the smallest denormal among the values.
  c.push_back({"cast", dims({N, D}) + " f32 -> bf16 -> f32", 0, [=](Side& s) {
                 std::vector<float> values = s.gaussian(N * D, 100.0f);
                 const float specials[] = {std::numeric_limits<float>::infinity(), -0.0f, 1.0f + 1.0f / 256,
                                           std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min()};
                 for (size_t i = 0; i < 5 && i < values.size(); ++i) values[i] = specials[i];
                 const Tensor f = s.tensor({N, D}, F32, values), b = s.zeros({N, D}, Kind::kBF16);
                 const Tensor back = s.zeros({N, D}, F32);
                 s.run([&] {
                   ops::cast(b, f);
                   ops::cast(back, b);
                 });
                 s.output("bf16", b, kExact);
                 s.output("f32", back, kExact);
               }});
  // A double sum in another order; the same bits run to run.
  c.push_back({"sum_squares", dims({N, D}), 1,
               [=](Side& s) {
                 const Tensor x = s.randn({N, D}, A, 3.0f);
                 double r = 0;
                 s.run([&] { r = ops::sum_squares(x); });
                 s.output("sum", r, Tol{1e-9, 0});
               },
               true});
}

// AdamW over three steps, as the per-tensor op and fused over a list of
// parameters of the model's shapes, one with a bf16 compute copy; the same
// bits run to run.
void optimizer_cases(std::vector<Case>& c, const Shapes& sh) {
  const int64_t D = sh.dim, F = sh.hidden, V = sh.vocab;
  c.push_back({"adamw_step", dims({D, F}), 0,
               [=](Side& s) {
                 const Tensor p = s.randn({D, F}, F32), g = s.randn({D, F}, F32), m = s.randn({D, F}, F32, 0.1f);
                 const Tensor v = s.tensor({D, F}, F32, s.uniform(D * F, 0.0f, 0.01f));
                 s.run([&] {
                   for (int64_t step = 1; step <= 3; ++step)
                     ops::adamw_step(p, g, m, v, {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f}, step, 0.5f);
                 });
                 for (auto [name, t] : {std::pair<const char*, Tensor>{"param", p}, {"m", m}, {"v", v}})
                   s.output(name, t, Tol{1e-6, 1e-10});
               },
               true});
  const std::string list = dims({V, D}) + ", " + dims({F, D}) + ", " + dims({D});
  c.push_back({"sum_squares_many", list, 0,
               [=](Side& s) {
                 const std::vector<Tensor> xs = {s.randn({V, D}, F32), s.randn({F, D}, F32), s.randn({D}, F32)};
                 double r = 0;
                 s.run([&] { r = ops::sum_squares_many(xs); });
                 s.output("sum", r, Tol{1e-9, 0});
               },
               true});
  c.push_back({"adamw_step_many", list, 0,
               [=](Side& s) {
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
               },
               true});
}

}  // namespace
std::vector<double> abs_products(const float* a, const float* b, int64_t R, int64_t C, int64_t K, int64_t a_r,
                                 int64_t a_k, int64_t b_k, int64_t b_c) {
  std::vector<double> m(static_cast<size_t>(R * C), 0.0);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t col = 0; col < C; ++col)
      for (int64_t k = 0; k < K; ++k)
        m[r * C + col] += std::fabs(a[r * a_r + k * a_k]) * std::fabs(b[k * b_k + col * b_c]);
  return m;
}

std::vector<double> plus_abs(std::vector<double> m, const std::vector<float>& prior) {
  for (size_t i = 0; i < m.size(); ++i) m[i] += std::fabs(prior[i]);
  return m;
}

Tol gemm_tol(DType in, DType out) {
  if (out == DType::kBF16) return {1e-2, 1e-4};
  return {0, in == DType::kBF16 ? 1e-4 : 1e-5};
}

bool gemm_dtypes(const std::vector<DType>& d) { return !(d[0] == DType::kF32 && d[1] == DType::kBF16); }

std::vector<Case> dense_cases(const Shapes& shapes) {
  std::vector<Case> c;
  embedding_and_norm_cases(c, shapes);
  matmul_cases(c, shapes);
  fp8_matmul_cases(c, shapes);
  attention_cases(c, shapes);
  elementwise_cases(c, shapes);
  optimizer_cases(c, shapes);
  return c;
}

std::vector<Case> cases(const Shapes& shapes) {
  std::vector<Case> c = dense_cases(shapes);
  for (Case& m : moe_cases(shapes)) c.push_back(std::move(m));
  return c;
}

}  // namespace moe::op_check
