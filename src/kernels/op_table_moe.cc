// The op table's MoE rows (op_table.h): the routers, their aux losses, the
// dispatch plan, permute/unpermute and the grouped expert GEMMs.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <numeric>
#include <random>

#include "src/kernels/cpu/cpu_ops.h"
#include "src/kernels/op_table.h"
#include "src/kernels/ops.h"

namespace moe::op_check {
namespace {

// The routing of a case's tokens, computed on the host (the same on both
// sides) so that the MoE ops downstream of the router get identical inputs.
struct Routing {
  std::vector<float> logits, scores, topk_w;
  std::vector<int32_t> topk_idx, offsets, row_pair, pair_row;
  int64_t M = 0;
};

// Pairs each expert keeps: capacity_factor x N x K / E, rounded up (0: all).
int64_t capacity_of(const Shapes& sh) {
  return static_cast<int64_t>(std::ceil(sh.capacity_factor * sh.N() * sh.top_k / sh.experts));
}

Routing route(Side& s, const Shapes& sh, cpu::RouterKind kind) {
  const int64_t N = sh.N(), E = sh.experts, K = sh.top_k;
  Routing r;
  r.logits = s.gaussian(N * E, 1.0f);
  if (sh.routing_skew > 0) {
    const std::vector<float> coin = s.uniform(N, 0.0f, 1.0f);
    for (int64_t n = 0; n < N; ++n)
      if (coin[n] < sh.routing_skew) r.logits[n * E] = 10.0f;
  }
  r.scores.resize(static_cast<size_t>(N * E));
  r.topk_w.resize(static_cast<size_t>(N * K));
  r.topk_idx.resize(static_cast<size_t>(N * K));
  cpu::router_forward(r.topk_idx.data(), r.topk_w.data(), r.scores.data(), r.logits.data(), nullptr, N, E, K, kind);
  r.offsets.resize(static_cast<size_t>(E + 1));
  r.row_pair.resize(static_cast<size_t>(N * K));
  r.pair_row.resize(static_cast<size_t>(N * K));
  cpu::moe_plan(r.offsets.data(), r.row_pair.data(), r.pair_row.data(), r.topk_idx.data(), N, E, K, capacity_of(sh));
  r.M = r.offsets.back();
  return r;
}

// Gaussian logits with exact ties planted where they decide the choice
// (equal logits give equal scores bit for bit on both backends; the bias of
// balance_bias() is equal on experts with the same e % 3):
//   row 0: every logit equal;
//   row 1: experts 1, 4, 7, 37, 40, 97 (those < E) tie for first: other
//          lanes, and the same lane (1, 97) at another place of its mask;
//   row 2: expert 0 first, then 3 and 6 tie at the second place;
//   row 3: experts E-4 and E-1 tie for first.
// Ties go to the lower index on both backends.
std::vector<float> tied_logits(Side& s, int64_t N, int64_t E) {
  std::vector<float> l = s.gaussian(N * E, 1.0f);
  if (N < 4 || E < 8) return l;
  std::fill(l.begin(), l.begin() + E, 0.25f);
  for (int64_t e : {1, 4, 7, 37, 40, 97})
    if (e < E) l[E + e] = 7.0f;
  l[2 * E + 0] = 8.0f;
  l[2 * E + 3] = l[2 * E + 6] = 6.0f;
  l[3 * E + E - 4] = l[3 * E + E - 1] = 7.5f;
  return l;
}

// bias_e = 0.001 * (e % 3): too small to lift a Gaussian logit over the
// planted ties, and equal on each set of tied experts.
std::vector<float> balance_bias(int64_t E) {
  std::vector<float> b(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) b[e] = 0.001f * static_cast<float>(e % 3);
  return b;
}

std::string offsets_text(const std::vector<int32_t>& off) {
  std::string s;
  for (int32_t o : off) s += (s.empty() ? "" : " ") + std::to_string(o);
  return s;
}

}  // namespace

std::vector<Case> moe_cases(const Shapes& sh) {
  const int64_t N = sh.N(), D = sh.dim, E = sh.experts, K = sh.top_k, Fe = sh.expert_hidden, T = sh.T;
  const Kind A = Kind::kAct, A1 = Kind::kAct1, F32 = Kind::kF32;
  // Scores and weights are computed in double and rounded to float on both
  // backends; only exp/log and the order of a double sum differ, which can
  // move a result by one float ulp at most: 3e-7 relative covers 2 ulps. The
  // router's backward: the same double operations in the same order, one
  // float rounding, one float add (1e-6). Aux losses and their gradient:
  // double sums in another order, rounded to float once (1e-6).
  const Tol scores_tol{3e-7, 1e-30}, router_grad{1e-6, 1e-7}, aux_tol{1e-6, 1e-12};
  // One bf16 rounding of a result is at most 2^-9 of it: 2^-8 leaves room.
  const auto copy_tol = [](Side& s, Kind k, Tol f32) {
    return s.dtype(k) == DType::kBF16 ? Tol{1.0 / 256, f32.atol} : f32;
  };
  const std::string ne = dims({N, E}) + " top-" + std::to_string(K);
  std::vector<Case> c;
  // Noisy gating: the normal draw's log and cos, expf and log1pf may differ in
  // the last bits between backends.
  const Tol noise_tol{1e-5, 1e-6};
  c.push_back({"router_noise_forward", dims({N, E}), 0, [=](Side& s) {
                 const Tensor logits = s.randn({N, E}, F32), noise_logits = s.randn({N, E}, F32, 4.0f);
                 const Tensor key = s.i32({noise::kKeyWords}, {5, -1, 9, 123457});
                 s.run([&] { ops::router_noise_forward(logits, noise_logits, key, 3); });
                 s.output("logits", logits, noise_tol);
               }});
  c.push_back({"router_noise_backward", dims({N, E}), 0, [=](Side& s) {
                 const Tensor dnoise = s.randn({N, E}, F32), dlogits = s.randn({N, E}, F32);
                 const Tensor noise_logits = s.randn({N, E}, F32, 4.0f);
                 const Tensor key = s.i32({noise::kKeyWords}, {5, -1, 9, 123457});
                 s.run([&] { ops::router_noise_backward(dnoise, dlogits, noise_logits, key, 3); });
                 s.output("dnoise_logits", dnoise, noise_tol);  // written over what it held
               }});
  for (const cpu::RouterKind kind : {cpu::RouterKind::kSoftmaxTopK, cpu::RouterKind::kSigmoidTopK}) {
    const std::string which = kind == cpu::RouterKind::kSoftmaxTopK ? " softmax" : " sigmoid";
    // softmax_topk ignores a balance bias on both backends; passing one checks that.
    for (const bool with_bias : {false, true}) {
      c.push_back({"router_forward", ne + which + (with_bias ? ", biased" : ""), 0, [=](Side& s) {
                     const Tensor idx = s.i32({N, K}, std::vector<int32_t>(N * K, -7));
                     const Tensor w = s.tensor({N, K}, F32, std::vector<float>(N * K, 7.0f));
                     const Tensor scores = s.tensor({N, E}, F32, std::vector<float>(N * E, 7.0f));
                     const Tensor logits = s.tensor({N, E}, F32, tied_logits(s, N, E));
                     const Tensor bias = with_bias ? s.tensor({E}, F32, balance_bias(E)) : Tensor{};
                     s.run([&] { ops::router_forward(idx, w, scores, logits, bias, kind); });
                     s.output("topk_idx", idx, kExact);
                     s.output("topk_w", w, scores_tol);
                     s.output("scores", scores, scores_tol);
                   }});
    }
    c.push_back({"router_backward", ne + which, 0, [=](Side& s) {
                   const Routing r = route(s, sh, kind);
                   const Tensor dlogits = s.randn({N, E}, F32), dw = s.randn({N, K}, F32);
                   const Tensor idx = s.i32({N, K}, r.topk_idx), w = s.tensor({N, K}, F32, r.topk_w);
                   const Tensor scores = s.tensor({N, E}, F32, r.scores);
                   s.run([&] { ops::router_backward(dlogits, dw, idx, w, scores, kind); });
                   s.output("dlogits", dlogits, router_grad);  // adds; unpicked logits keep their values
                 }});
    // The gradient is written over what daux held; without daux, the losses alone.
    for (const bool with_grad : {true, false}) {
      c.push_back(
          {"router_aux_losses", ne + which + ", T=" + std::to_string(T) + (with_grad ? "" : ", no gradient"), 0,
           [=](Side& s) {
             const Routing r = route(s, sh, kind);
             const Tensor aux = s.tensor({3}, F32, {7.0f, 7.0f, 7.0f});
             const Tensor daux = with_grad ? s.tensor({N, E}, F32, std::vector<float>(N * E, 7.0f)) : Tensor{};
             const Tensor logits = s.tensor({N, E}, F32, r.logits), scores = s.tensor({N, E}, F32, r.scores);
             const Tensor idx = s.i32({N, K}, r.topk_idx);
             s.run([&] { ops::router_aux_losses(aux, daux, logits, scores, idx, T, kind, 0.7f, 0.3f, 0.5f, 1.5f); });
             s.output("aux", aux, Tol{1e-6, 0});
             if (with_grad) s.output("daux_logits", daux, aux_tol);
           },
           true});
    }
  }
  // Pairs sorted by expert in token order, the overflow dropped in token
  // order; the outputs start as garbage. row_pair past M is the GPU's scratch.
  const int64_t capacity = capacity_of(sh);
  c.push_back(
      {"moe_plan",
       ne + ", capacity " + std::to_string(capacity) +
           (sh.routing_skew > 0 ? ", skew " + std::to_string(sh.routing_skew) : ""),
       0, [=](Side& s) {
         const Routing r = route(s, sh, cpu::RouterKind::kSoftmaxTopK);
         const Tensor offsets = s.i32({E + 1}, std::vector<int32_t>(E + 1, -7));
         const Tensor row_pair = s.i32({N * K}, std::vector<int32_t>(N * K, -7));
         const Tensor pair_row = s.i32({N, K}, std::vector<int32_t>(N * K, -7)), idx = s.i32({N, K}, r.topk_idx);
         s.run([&] { ops::moe_plan(offsets, row_pair, pair_row, idx, capacity); });
         s.output("offsets", offsets, kExact);
         s.output("pair_row", pair_row, kExact);
         s.output("row_pair", row_pair.rows(0, r.M), kExact);
       }});
  // The same with a priority (expert choice; V-MoE's batch priority): the
  // router's weights, and the same rounded to eighths, where many pairs of an
  // expert tie at its capacity's edge and the earlier pair must win.
  for (const bool tied : {false, true}) {
    c.push_back({"moe_plan",
                 ne + ", capacity " + std::to_string(capacity) + (tied ? ", tied priority" : ", priority") +
                     (sh.routing_skew > 0 ? ", skew " + std::to_string(sh.routing_skew) : ""),
                 0, [=](Side& s) {
                   const Routing r = route(s, sh, cpu::RouterKind::kSoftmaxTopK);
                   std::vector<float> priority = r.topk_w;
                   if (tied)
                     for (float& v : priority) v = std::round(v * 8.0f) / 8.0f;
                   const Tensor offsets = s.i32({E + 1}, std::vector<int32_t>(E + 1, -7));
                   const Tensor row_pair = s.i32({N * K}, std::vector<int32_t>(N * K, -7));
                   const Tensor pair_row = s.i32({N, K}, std::vector<int32_t>(N * K, -7));
                   const Tensor idx = s.i32({N, K}, r.topk_idx), prio = s.tensor({N, K}, F32, priority);
                   s.run([&] { ops::moe_plan(offsets, row_pair, pair_row, idx, capacity, prio); });
                   std::vector<int32_t> kept(static_cast<size_t>(E + 1));
                   download(kept.data(), offsets);
                   s.output("offsets", offsets, kExact);
                   s.output("pair_row", pair_row, kExact);
                   s.output("row_pair", row_pair.rows(0, kept.back()), kExact);
                 }});
  }
  c.push_back({"moe_count_experts", ne, 0, [=](Side& s) {
                 const Routing r = route(s, sh, cpu::RouterKind::kSoftmaxTopK);
                 const Tensor routed = s.i32({E}, std::vector<int32_t>(static_cast<size_t>(E), 3));
                 const Tensor kept = s.i32({E}, std::vector<int32_t>(static_cast<size_t>(E), 5));
                 const Tensor idx = s.i32({N, K}, r.topk_idx), offsets = s.i32({E + 1}, r.offsets);
                 s.run([&] { ops::moe_count_experts(routed, kept, idx, offsets); });
                 s.output("routed", routed, kExact);
                 s.output("kept", kept, kExact);
               }});
  const std::string nd = dims({N, D}) + " top-" + std::to_string(K) + " of " + std::to_string(E);
  // xs (slot 1) from x (slot 0): a copy of the kept rows; rows past M keep what they held.
  c.push_back({"moe_permute", nd, 2, [=](Side& s) {
                 const Routing r = route(s, sh, cpu::RouterKind::kSoftmaxTopK);
                 const Tensor xs = s.tensor({N * K, D}, A1, std::vector<float>(N * K * D, 7.0f));
                 const Tensor x = s.randn({N, D}, A), pr = s.i32({N, K}, r.pair_row);
                 s.run([&] { ops::moe_permute(xs, x, pr); });
                 s.output("xs", xs, kExact);
               }});
  // dx (slot 0) += a token's rows of dxs (slot 1), in ascending row order as the CPU adds them.
  c.push_back({"moe_permute_backward", nd, 2, [=](Side& s) {
                 const Routing r = route(s, sh, cpu::RouterKind::kSoftmaxTopK);
                 const Tensor dx = s.randn({N, D}, A), dxs = s.randn({N * K, D}, A1), pr = s.i32({N, K}, r.pair_row);
                 s.run([&] { ops::moe_permute_backward(dx, dxs, pr); });
                 s.output("dx", dx, copy_tol(s, A, Tol{1e-6, 1e-6}));
               }});
  c.push_back({"gather_rows", dims({N * K, D}), 1, [=](Side& s) {
                 std::vector<int32_t> index(static_cast<size_t>(N * K));
                 std::iota(index.begin(), index.end(), 0);
                 std::mt19937 gen(7);
                 std::shuffle(index.begin(), index.end(), gen);
                 const Tensor dst = s.zeros({N * K, D}, A), src = s.randn({N * K, D}, A), idx = s.i32({N * K}, index);
                 s.run([&] { ops::gather_rows(dst, src, idx); });
                 s.output("dst", dst, kExact);
               }});
  // out (slot 0) += the weighted rows of ys (slot 1); dropped pairs add nothing.
  c.push_back({"moe_unpermute", nd, 2, [=](Side& s) {
                 const Routing r = route(s, sh, cpu::RouterKind::kSoftmaxTopK);
                 const Tensor out = s.randn({N, D}, A), ys = s.randn({N * K, D}, A1);
                 const Tensor w = s.tensor({N, K}, F32, r.topk_w), pr = s.i32({N, K}, r.pair_row);
                 s.run([&] { ops::moe_unpermute(out, ys, w, pr); });
                 s.output("out", out, copy_tol(s, A, Tol{1e-6, 1e-6}));
               }});
  // dys = w dout and dtopk_w = a D-term dot product (fp32 on the GPU, double
  // on the CPU), both written; 0 for dropped pairs.
  c.push_back({"moe_unpermute_backward", nd, 1, [=](Side& s) {
                 const Routing r = route(s, sh, cpu::RouterKind::kSoftmaxTopK);
                 const Tensor dys = s.tensor({N * K, D}, A, std::vector<float>(N * K * D, 7.0f));
                 const Tensor dw = s.tensor({N, K}, F32, std::vector<float>(N * K, 7.0f)), dout = s.randn({N, D}, A);
                 const Tensor ys = s.randn({N * K, D}, A), w = s.tensor({N, K}, F32, r.topk_w);
                 const Tensor pr = s.i32({N, K}, r.pair_row);
                 s.run([&] { ops::moe_unpermute_backward(dys, dw, dout, ys, w, pr); });
                 s.output("dys", dys, copy_tol(s, A, Tol{1e-6, 1e-7}));
                 s.output("dtopk_w", dw, Tol{1e-5, 1e-4});
               }});
  const std::string gm = std::to_string(E) + " x " + dims({D, Fe}) + ", " + std::to_string(N * K) + " rows" +
                         (sh.expert_offsets.empty() ? "" : " at offsets " + offsets_text(sh.expert_offsets));
  const int64_t M = N * K, I = D, O = Fe;
  // Each expert's rows times its weights, the offsets on the device; rows
  // outside every expert (capacity drops, or before the first offset) and
  // the dW of an expert without rows keep what they held. Inputs in slot 0,
  // out and dx in slot 1.
  const auto offsets_of = [=](Side& s) {
    if (sh.expert_offsets.empty()) return route(s, sh, cpu::RouterKind::kSoftmaxTopK).offsets;
    if (static_cast<int64_t>(sh.expert_offsets.size()) != E + 1 || sh.expert_offsets.back() > M)
      throw std::logic_error("op_check: expert offsets " + offsets_text(sh.expert_offsets) + " for " +
                             std::to_string(E) + " experts and " + std::to_string(M) + " rows");
    return sh.expert_offsets;
  };
  c.push_back({"grouped_matmul_forward", gm, 2,
               [=](Side& s) {
                 const std::vector<int32_t> off = offsets_of(s);
                 const std::vector<float> x = s.stored(A, s.gaussian(M * I, 1.0f));
                 const std::vector<float> w = s.stored(A, s.gaussian(E * I * O, 1.0f));
                 const Tensor out = s.randn({M, O}, A1), tx = s.tensor({M, I}, A, x), tw = s.tensor({E, I, O}, A, w);
                 const Tensor offsets = s.i32({E + 1}, off);
                 s.run([&] { ops::grouped_matmul_forward(out, tx, tw, offsets); });
                 std::vector<double> mag(static_cast<size_t>(M * O), 0.0);
                 for (int64_t e = 0; e < E; ++e) {
                   const int64_t r0 = off[e], rows = off[e + 1] - off[e];
                   const std::vector<double> m =
                       abs_products(x.data() + r0 * I, w.data() + e * I * O, rows, O, I, I, 1, O, 1);
                   std::copy(m.begin(), m.end(), mag.begin() + r0 * O);
                 }
                 s.output("out", out, gemm_tol(s.dtype(A), s.dtype(A1)), mag);
               },
               false, gemm_dtypes});
  for (const bool with_dx : {true, false}) {
    c.push_back(
        {"grouped_matmul_backward", gm + (with_dx ? " (dx +=, dW +=)" : " (dW += only)"), with_dx ? 2 : 1,
         [=](Side& s) {
           const std::vector<int32_t> off = offsets_of(s);
           const std::vector<float> x = s.stored(A, s.gaussian(M * I, 1.0f));
           const std::vector<float> w = s.stored(A, s.gaussian(E * I * O, 1.0f));
           const std::vector<float> dout = s.stored(A, s.gaussian(M * O, 1.0f));
           const std::vector<float> dx0 = s.stored(A1, s.gaussian(M * I, 1.0f)), dw0 = s.gaussian(E * I * O, 1.0f);
           const Tensor tx = s.tensor({M, I}, A, x), tw = s.tensor({E, I, O}, A, w), tdout = s.tensor({M, O}, A, dout);
           const Tensor dx = with_dx ? s.tensor({M, I}, A1, dx0) : Tensor{}, dw = s.tensor({E, I, O}, F32, dw0);
           const Tensor offsets = s.i32({E + 1}, off);
           s.run([&] { ops::grouped_matmul_backward(dx, dw, tdout, tx, tw, offsets); });
           std::vector<double> mag_dx(static_cast<size_t>(M * I), 0.0), mag_dw(static_cast<size_t>(E * I * O), 0.0);
           for (int64_t e = 0; e < E; ++e) {
             const int64_t r0 = off[e], rows = off[e + 1] - off[e];
             const std::vector<double> mx =
                 abs_products(dout.data() + r0 * O, w.data() + e * I * O, rows, I, O, O, 1, 1, O);
             std::copy(mx.begin(), mx.end(), mag_dx.begin() + r0 * I);
             const std::vector<double> mw =
                 abs_products(x.data() + r0 * I, dout.data() + r0 * O, I, O, rows, 1, I, O, 1);
             std::copy(mw.begin(), mw.end(), mag_dw.begin() + e * I * O);
           }
           if (with_dx) s.output("dx", dx, gemm_tol(s.dtype(A), s.dtype(A1)), plus_abs(std::move(mag_dx), dx0));
           s.output("dw", dw, gemm_tol(s.dtype(A), DType::kF32), plus_abs(std::move(mag_dw), dw0));
         },
         false, with_dx ? std::function<bool(const std::vector<DType>&)>(gemm_dtypes) : nullptr});
  }
  return c;
}

}  // namespace moe::op_check
