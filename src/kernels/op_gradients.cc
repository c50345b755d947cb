// The op table's gradient rows (op_table.h): each differentiable op's
// backward declared against its forward, for check_gradients to hold to
// central finite differences on the CPU. Inputs are F32 host tensors; a
// forward recomputes its outputs from them every time it is called, and a
// backward writes or adds each input's gradient of L = sum dot(dout, out)
// into its buffer, which the check zeroes first.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "src/kernels/cpu/cpu_ops.h"
#include "src/kernels/op_table.h"
#include "src/kernels/ops.h"

namespace moe::op_check {
namespace {

const Kind F32 = Kind::kF32;

// Logits whose top-k choice a step of the finite difference cannot change:
// each row a shuffle of values 0.25 apart.
std::vector<float> separated_logits(Side& s, int64_t N, int64_t E) {
  std::vector<float> v(static_cast<size_t>(N * E));
  const std::vector<float> noise = s.uniform(N * E, 0.0f, 1.0f);
  for (int64_t n = 0; n < N; ++n) {
    std::vector<int64_t> order(static_cast<size_t>(E));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return noise[n * E + a] < noise[n * E + b]; });
    for (int64_t e = 0; e < E; ++e) v[n * E + order[e]] = 0.25f * static_cast<float>(e) - 0.125f * E;
  }
  return v;
}

void dense_gradients(std::vector<Case>& c, const Shapes& sh) {
  const int64_t B = sh.B, T = sh.T, N = sh.N(), D = sh.dim, F = sh.hidden, V = sh.vocab;
  const int64_t H = sh.heads, G = sh.kv_heads, Dh = sh.head_dim;
  c.push_back({"embedding_backward", dims({N, D}) + " into " + dims({V, D}), 0, [=](Side& s) {
                 const Tensor table = s.randn({V, D}, F32), out = s.zeros({N, D}, F32), dout = s.randn({N, D}, F32);
                 const Tensor tokens = s.i32({N}, s.ids(N, static_cast<int32_t>(V))), dtable = s.zeros({V, D}, F32);
                 s.gradient({{{"table", table, dtable}},
                             {{out, dout}},
                             [=] { ops::embedding_forward(out, tokens, table); },
                             [=] { ops::embedding_backward(dtable, dout, tokens); }});
               }});
  c.push_back({"rmsnorm_backward", dims({N, D}), 0, [=](Side& s) {
                 const Tensor x = s.randn({N, D}, F32), w = s.randn({D}, F32), out = s.zeros({N, D}, F32);
                 const Tensor rstd = s.zeros({N}, F32), dout = s.randn({N, D}, F32);
                 const Tensor dx = s.zeros({N, D}, F32), dw = s.zeros({D}, F32);
                 s.gradient({{{"x", x, dx}, {"w", w, dw}},
                             {{out, dout}},
                             [=] { ops::rmsnorm_forward(out, rstd, x, w, 1e-5f); },
                             [=] { ops::rmsnorm_backward(dx, dw, dout, x, w, rstd, Tensor{}); }});
               }});
  // The fused add and norm: both addends get the residual's gradient plus the norm's.
  c.push_back({"rmsnorm_backward", dims({N, D}) + " after add_rmsnorm_forward", 0, [=](Side& s) {
                 const Tensor x = s.randn({N, D}, F32), y = s.randn({N, D}, F32), w = s.randn({D}, F32);
                 const Tensor sum = s.zeros({N, D}, F32), out = s.zeros({N, D}, F32), rstd = s.zeros({N}, F32);
                 const Tensor dsum = s.randn({N, D}, F32), dout = s.randn({N, D}, F32);
                 const Tensor dx = s.zeros({N, D}, F32), dy = s.zeros({N, D}, F32), dw = s.zeros({D}, F32);
                 s.gradient({{{"x", x, dx}, {"y", y, dy}, {"w", w, dw}},
                             {{sum, dsum}, {out, dout}},
                             [=] { ops::add_rmsnorm_forward(sum, out, rstd, x, y, w, 1e-5f); },
                             [=] {
                               ops::rmsnorm_backward(dx, dw, dout, sum, w, rstd, dsum);
                               copy_tensor(dy, dx);
                             }});
               }});
  c.push_back({"matmul_backward", dims({N, F}) + " -> " + dims({N, D}) + ", " + dims({F, D}), 0, [=](Side& s) {
                 const Tensor x = s.randn({N, D}, F32), w = s.randn({F, D}, F32), out = s.zeros({N, F}, F32);
                 const Tensor dout = s.randn({N, F}, F32), dx = s.zeros({N, D}, F32), dw = s.zeros({F, D}, F32);
                 s.gradient({{{"x", x, dx}, {"w", w, dw}},
                             {{out, dout}},
                             [=] { ops::matmul_forward(out, x, w); },
                             [=] { ops::matmul_backward(dx, dw, dout, x, w, ops::GradInto::kWrite); }});
               }});
  c.push_back({"rope_backward", dims({B, T, H, Dh}), 0, [=](Side& s) {
                 const Tensor x = s.randn({B, T, H, Dh}, F32), out = s.zeros({B, T, H, Dh}, F32);
                 const Tensor dout = s.randn({B, T, H, Dh}, F32), dx = s.zeros({B, T, H, Dh}, F32);
                 s.gradient({{{"x", x, dx}},
                             {{out, dout}},
                             [=] {
                               copy_tensor(out, x);
                               ops::rope_forward(out, 10000.0f);
                             },
                             [=] {
                               copy_tensor(dx, dout);
                               ops::rope_backward(dx, 10000.0f);
                             }});
               }});
  c.push_back({"attention_backward", "q " + dims({B, T, H, Dh}) + ", kv " + dims({B, T, G, Dh}), 0, [=](Side& s) {
                 const Tensor q = s.randn({B, T, H, Dh}, F32), k = s.randn({B, T, G, Dh}, F32);
                 const Tensor v = s.randn({B, T, G, Dh}, F32), out = s.zeros({B, T, H, Dh}, F32);
                 const Tensor lse = s.zeros({B, H, T}, F32), dout = s.randn({B, T, H, Dh}, F32);
                 const Tensor dq = s.zeros({B, T, H, Dh}, F32), dk = s.zeros({B, T, G, Dh}, F32);
                 const Tensor dv = s.zeros({B, T, G, Dh}, F32);
                 s.gradient({{{"q", q, dq}, {"k", k, dk}, {"v", v, dv}},
                             {{out, dout}},
                             [=] { ops::attention_forward(out, lse, q, k, v); },
                             [=] { ops::attention_backward(dq, dk, dv, dout, q, k, v, out, lse); }});
               }});
  c.push_back({"swiglu_backward", dims({N, F}), 0, [=](Side& s) {
                 const Tensor a = s.randn({N, F}, F32, 2.0f), b = s.randn({N, F}, F32), out = s.zeros({N, F}, F32);
                 const Tensor dout = s.randn({N, F}, F32), da = s.zeros({N, F}, F32), db = s.zeros({N, F}, F32);
                 s.gradient({{{"a", a, da}, {"b", b, db}},
                             {{out, dout}},
                             [=] { ops::swiglu_forward(out, a, b); },
                             [=] { ops::swiglu_backward(da, db, dout, a, b); }});
               }});
  // L = scale * sum of the token losses: dlogits is its gradient.
  c.push_back({"cross_entropy_forward_backward", dims({N, V}), 0, [=](Side& s) {
                 const float scale = 1.0f / static_cast<float>(N);
                 const Tensor logits = s.randn({N, V}, F32, 3.0f), loss = s.zeros({N}, F32);
                 const Tensor dloss = s.tensor({N}, F32, std::vector<float>(static_cast<size_t>(N), scale));
                 const Tensor targets = s.i32({N}, s.ids(N, static_cast<int32_t>(V)));
                 const Tensor scratch = s.zeros({N, V}, F32), dlogits = s.zeros({N, V}, F32);
                 s.gradient({{{"logits", logits, dlogits}},
                             {{loss, dloss}},
                             [=] { ops::cross_entropy_forward_backward(loss, scratch, logits, targets, scale); },
                             [=] { ops::cross_entropy_forward_backward(loss, dlogits, logits, targets, scale); }});
               }});
}

void moe_gradients(std::vector<Case>& c, const Shapes& sh) {
  const int64_t T = sh.T, N = sh.N(), D = sh.dim, E = sh.experts, K = sh.top_k, Fe = sh.expert_hidden;
  const Kind I32 = Kind::kI32;
  // Noise multiplies (its own backward) and noisy gating's learned noise.
  c.push_back({"multiply_noise", dims({N, D}) + " uniform", 0, [=](Side& s) {
                 const Tensor x = s.randn({N, D}, F32), out = s.zeros({N, D}, F32), dout = s.randn({N, D}, F32);
                 const Tensor dx = s.zeros({N, D}, F32), key = s.i32({noise::kKeyWords}, {1, 2, 3, 4});
                 const noise::Distribution u{noise::Kind::kUniform, 0.5f, 1.5f};
                 s.gradient({{{"x", x, dx}},
                             {{out, dout}},
                             [=] { ops::multiply_noise(out, x, key, 7, u); },
                             [=] { ops::multiply_noise(dx, dout, key, 7, u); }});
               }});
  c.push_back({"multiply_noise_rows", dims({N, D}) + " keep", 0, [=](Side& s) {
                 const Tensor x = s.randn({N, D}, F32), out = s.zeros({N, D}, F32), dout = s.randn({N, D}, F32);
                 const Tensor dx = s.zeros({N, D}, F32), key = s.i32({noise::kKeyWords}, {1, 2, 3, 4});
                 std::vector<int32_t> ids(static_cast<size_t>(2 * N));  // (micro-batch 4, rows reversed)
                 for (int64_t r = 0; r < N; ++r) ids[2 * r] = 4, ids[2 * r + 1] = static_cast<int32_t>(N - 1 - r);
                 const Tensor row_of = s.i32({N, 2}, ids);
                 const noise::Distribution keep{noise::Kind::kKeep, 0.6f, 0};
                 s.gradient({{{"x", x, dx}},
                             {{out, dout}},
                             [=] { ops::multiply_noise_rows(out, x, row_of, N, key, 7, keep); },
                             [=] { ops::multiply_noise_rows(dx, dout, row_of, N, key, 7, keep); }});
               }});
  c.push_back({"router_noise_backward", dims({N, E}), 0, [=](Side& s) {
                 const Tensor clean = s.randn({N, E}, F32), noise_logits = s.randn({N, E}, F32, 2.0f);
                 const Tensor logits = s.zeros({N, E}, F32), dlogits = s.randn({N, E}, F32);
                 const Tensor dnoise = s.zeros({N, E}, F32), key = s.i32({noise::kKeyWords}, {1, 2, 3, 4});
                 s.gradient({{{"noise_logits", noise_logits, dnoise}},
                             {{logits, dlogits}},
                             [=] {
                               copy_tensor(logits, clean);
                               ops::router_noise_forward(logits, noise_logits, key, 7);
                             },
                             [=] { ops::router_noise_backward(dnoise, dlogits, noise_logits, key, 7); }});
               }});
  for (const cpu::RouterKind kind : {cpu::RouterKind::kSoftmaxTopK, cpu::RouterKind::kSigmoidTopK}) {
    const std::string which = kind == cpu::RouterKind::kSoftmaxTopK ? " softmax" : " sigmoid";
    const std::string ne = dims({N, E}) + " top-" + std::to_string(K) + which;
    c.push_back({"router_backward", ne, 0, [=](Side& s) {
                   const Tensor logits = s.tensor({N, E}, F32, separated_logits(s, N, E));
                   const Tensor idx = s.zeros({N, K}, I32), w = s.zeros({N, K}, F32), scores = s.zeros({N, E}, F32);
                   const Tensor dw = s.randn({N, K}, F32), dlogits = s.zeros({N, E}, F32);
                   s.gradient({{{"logits", logits, dlogits}},
                               {{w, dw}},
                               [=] { ops::router_forward(idx, w, scores, logits, Tensor{}, kind); },
                               [=] { ops::router_backward(dlogits, dw, idx, w, scores, kind); }});
                 }});
    // The balance counts come from the choice, which L keeps fixed: no gradient flows through them.
    c.push_back(
        {"router_aux_losses", ne + ", T=" + std::to_string(T), 0, [=](Side& s) {
           const float w_lb = 0.7f, w_z = 0.3f, w_seq = 0.5f, scale = 1.5f;
           const Tensor logits = s.tensor({N, E}, F32, separated_logits(s, N, E));
           const Tensor idx = s.zeros({N, K}, I32), w = s.zeros({N, K}, F32), scores = s.zeros({N, E}, F32);
           ops::router_forward(idx, w, scores, logits, Tensor{}, kind);
           const Tensor aux = s.zeros({3}, F32), dlogits = s.zeros({N, E}, F32);
           const Tensor daux = s.tensor({3}, F32, {scale * w_lb, scale * w_z, scale * w_seq});
           const Tensor idx_now = s.zeros({N, K}, I32);
           s.gradient(
               {{{"logits", logits, dlogits}},
                {{aux, daux}},
                [=] {
                  ops::router_forward(idx_now, w, scores, logits, Tensor{}, kind);
                  ops::router_aux_losses(aux, Tensor{}, logits, scores, idx, T, kind, 0, 0, 0, 0);
                },
                [=] { ops::router_aux_losses(aux, dlogits, logits, scores, idx, T, kind, w_lb, w_z, w_seq, scale); }});
         }});
  }
  // A plan with drops (capacity below the load), from the host's routing.
  const auto plan = [=](Side& s, Tensor& topk_w, Tensor& pair_row) {
    const Tensor logits = s.randn({N, E}, F32), idx = s.zeros({N, K}, I32), scores = s.zeros({N, E}, F32);
    topk_w = s.zeros({N, K}, F32);
    ops::router_forward(idx, topk_w, scores, logits, Tensor{}, cpu::RouterKind::kSoftmaxTopK);
    const Tensor offsets = s.zeros({E + 1}, I32), row_pair = s.zeros({N * K}, I32);
    pair_row = s.zeros({N, K}, I32);
    ops::moe_plan(offsets, row_pair, pair_row, idx, std::max<int64_t>(1, N * K / E * 3 / 4));
    return offsets;
  };
  const std::string nd = dims({N, D}) + " top-" + std::to_string(K) + " of " + std::to_string(E);
  c.push_back({"moe_permute_backward", nd, 0, [=](Side& s) {
                 Tensor topk_w, pr;
                 plan(s, topk_w, pr);
                 const Tensor x = s.randn({N, D}, F32), xs = s.zeros({N * K, D}, F32), dxs = s.randn({N * K, D}, F32);
                 const Tensor dx = s.zeros({N, D}, F32);
                 s.gradient({{{"x", x, dx}},
                             {{xs, dxs}},
                             [=] { ops::moe_permute(xs, x, pr); },
                             [=] { ops::moe_permute_backward(dx, dxs, pr); }});
               }});
  c.push_back({"moe_unpermute_backward", nd, 0, [=](Side& s) {
                 Tensor w, pr;
                 plan(s, w, pr);
                 const Tensor ys = s.randn({N * K, D}, F32), out = s.zeros({N, D}, F32), dout = s.randn({N, D}, F32);
                 const Tensor dys = s.zeros({N * K, D}, F32), dw = s.zeros({N, K}, F32);
                 s.gradient({{{"ys", ys, dys}, {"topk_w", w, dw}},
                             {{out, dout}},
                             [=] {
                               zero(out);  // unpermute adds into its output
                               ops::moe_unpermute(out, ys, w, pr);
                             },
                             [=] { ops::moe_unpermute_backward(dys, dw, dout, ys, w, pr); }});
               }});
  c.push_back({"grouped_matmul_backward", std::to_string(E) + " x " + dims({D, Fe}), 0, [=](Side& s) {
                 Tensor topk_w, pr;
                 const Tensor offsets = plan(s, topk_w, pr);
                 const int64_t M = N * K;  // rows past the kept ones stay untouched
                 const Tensor x = s.randn({M, D}, F32), w = s.randn({E, D, Fe}, F32), out = s.zeros({M, Fe}, F32);
                 const Tensor dout = s.randn({M, Fe}, F32), dx = s.zeros({M, D}, F32), dw = s.zeros({E, D, Fe}, F32);
                 s.gradient({{{"x", x, dx}, {"w", w, dw}},
                             {{out, dout}},
                             [=] { ops::grouped_matmul_forward(out, x, w, offsets); },
                             [=] { ops::grouped_matmul_backward(dx, dw, dout, x, w, offsets); }});
               }});
}

}  // namespace

std::vector<Case> gradient_cases(const Shapes& shapes) {
  std::vector<Case> c;
  dense_gradients(c, shapes);
  moe_gradients(c, shapes);
  return c;
}

}  // namespace moe::op_check
