// The MoE half of the CPU reference kernels: router, auxiliary losses,
// dispatch plan, permute/unpermute and grouped matmul. Small inputs whose
// answers are worked out by hand in comments, and gradients held against
// finite differences.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "src/core/tensor.h"
#include "src/kernels/cpu/cpu_ops.h"
#include "src/kernels/ops.h"
#include "tests/kernels/grad_check.h"

using moe::cpu::RouterKind;
using moe::test::check_gradient;
using moe::test::dot;
using moe::test::random_vector;

namespace {

const float kLn3 = std::log(3.0f), kLn9 = std::log(9.0f);

struct Routed {
  std::vector<int32_t> idx_NK;
  std::vector<float> w_NK, scores_NE;
};

Routed route(const std::vector<float>& logits_NE, const float* bias_E, int64_t N, int64_t E, int64_t K,
             RouterKind kind) {
  Routed r{std::vector<int32_t>(N * K), std::vector<float>(N * K), std::vector<float>(N * E)};
  moe::cpu::router_forward(r.idx_NK.data(), r.w_NK.data(), r.scores_NE.data(), logits_NE.data(), bias_E, N, E, K, kind);
  return r;
}

// Logits whose sorted values are at least `gap` apart (a shuffled ladder with a
// little noise), so a finite-difference step cannot change the top-k choice.
std::vector<float> ladder_logits(int64_t N, int64_t E, float gap, uint64_t seed) {
  std::vector<float> logits_NE(N * E);
  std::vector<float> noise = random_vector(N * E, seed, 0.05f * gap);
  std::mt19937_64 gen(seed);
  std::vector<int> rank(E);
  for (int64_t n = 0; n < N; ++n) {
    std::iota(rank.begin(), rank.end(), 0);
    std::shuffle(rank.begin(), rank.end(), gen);
    for (int64_t e = 0; e < E; ++e) logits_NE[n * E + e] = gap * (rank[e] - E / 2.0f) + noise[n * E + e];
  }
  return logits_NE;
}

}  // namespace

// ---- router_forward ---------------------------------------------------------

TEST_CASE("softmax_topk picks the largest probabilities and renormalises them", "[router]") {
  // E = 4, K = 2. Renormalised over the picked pair, softmax becomes a
  // sigmoid of the logit difference: w = (e^a, e^b) / (e^a + e^b).
  // row 0: [1, 3, 2, 0]  -> experts 1, 2; w = sigmoid(1), sigmoid(-1) = 0.7310586, 0.2689414
  // row 1: [1, 1, 3, 1]  -> expert 2, then the tie 0/1/3 goes to 0; w = sigmoid(2), sigmoid(-2)
  // row 2: [0, 5, 0, 5]  -> tie for first: 1 before 3; w = 0.5, 0.5
  const std::vector<float> logits = {1, 3, 2, 0, 1, 1, 3, 1, 0, 5, 0, 5};
  const Routed r = route(logits, nullptr, 3, 4, 2, RouterKind::kSoftmaxTopK);
  CHECK(r.idx_NK == std::vector<int32_t>{1, 2, 2, 0, 1, 3});
  const std::vector<float> w = {0.7310586f, 0.2689414f, 0.8807971f, 0.1192029f, 0.5f, 0.5f};
  for (size_t i = 0; i < w.size(); ++i) CHECK(r.w_NK[i] == Approx(w[i]).epsilon(1e-6));
  // scores are the full softmax: e^[1,3,2,0] / 31.192875 for row 0.
  const std::vector<float> p0 = {0.0871443f, 0.6439143f, 0.2368828f, 0.0320586f};
  for (int e = 0; e < 4; ++e) CHECK(r.scores_NE[e] == Approx(p0[e]).epsilon(1e-5));
}

TEST_CASE("softmax_topk ignores the balance bias", "[router]") {
  const std::vector<float> logits = {1, 3, 2, 0};
  const std::vector<float> bias = {5, 0, 0, 5};
  const Routed r = route(logits, bias.data(), 1, 4, 2, RouterKind::kSoftmaxTopK);
  CHECK(r.idx_NK == std::vector<int32_t>{1, 2});
}

TEST_CASE("sigmoid_topk: the bias steers the choice, the weights come from the scores alone", "[router]") {
  // logits [0, ln3, -ln3, ln9] -> s = [0.5, 0.75, 0.25, 0.9].
  const std::vector<float> logits = {0, kLn3, -kLn3, kLn9};
  const Routed plain = route(logits, nullptr, 1, 4, 2, RouterKind::kSigmoidTopK);
  const std::vector<float> s = {0.5f, 0.75f, 0.25f, 0.9f};
  for (int e = 0; e < 4; ++e) CHECK(plain.scores_NE[e] == Approx(s[e]).epsilon(1e-6));
  // No bias: experts 3, 1; w = (0.9, 0.75) / 1.65.
  CHECK(plain.idx_NK == std::vector<int32_t>{3, 1});
  CHECK(plain.w_NK[0] == Approx(0.9 / 1.65).epsilon(1e-6));
  CHECK(plain.w_NK[1] == Approx(0.75 / 1.65).epsilon(1e-6));

  // bias [0, 0, 0.7, 0]: selection values [0.5, 0.75, 0.95, 0.9] -> experts 2, 3
  // in that order, but w = (0.25, 0.9) / 1.15, not (0.95, 0.9) / 1.85.
  const std::vector<float> bias = {0, 0, 0.7f, 0};
  const Routed biased = route(logits, bias.data(), 1, 4, 2, RouterKind::kSigmoidTopK);
  CHECK(biased.idx_NK == std::vector<int32_t>{2, 3});
  CHECK(biased.w_NK[0] == Approx(0.25 / 1.15).epsilon(1e-6));
  CHECK(biased.w_NK[1] == Approx(0.9 / 1.15).epsilon(1e-6));
  CHECK(biased.scores_NE == plain.scores_NE);
}

TEST_CASE("sigmoid_topk breaks a tie of score + bias to the lower index", "[router]") {
  // s = [0.5, 0.75, 0.25, 0.9], bias [0.25, 0, 0, 0]: values [0.75, 0.75, 0.25, 0.9],
  // all exact in fp32. Expert 3 first, then the tie 0/1 goes to 0:
  // w = (0.9, 0.5) / 1.4.
  const std::vector<float> logits = {0, kLn3, -kLn3, kLn9};
  const std::vector<float> bias = {0.25f, 0, 0, 0};
  const Routed r = route(logits, bias.data(), 1, 4, 2, RouterKind::kSigmoidTopK);
  REQUIRE(r.scores_NE[0] == 0.5f);
  REQUIRE(r.scores_NE[1] == 0.75f);  // the tie is real, not a rounding accident
  CHECK(r.idx_NK == std::vector<int32_t>{3, 0});
  CHECK(r.w_NK[0] == Approx(0.9 / 1.4).epsilon(1e-6));
  CHECK(r.w_NK[1] == Approx(0.5 / 1.4).epsilon(1e-6));
}

// ---- router_backward --------------------------------------------------------

TEST_CASE("router_backward matches finite differences", "[router][grad]") {
  const int64_t N = 5, E = 8, K = 3;
  for (RouterKind kind : {RouterKind::kSoftmaxTopK, RouterKind::kSigmoidTopK}) {
    INFO("kind " << (kind == RouterKind::kSoftmaxTopK ? "softmax_topk" : "sigmoid_topk"));
    std::vector<float> logits = ladder_logits(N, E, 0.5f, 11);
    const std::vector<float> dw = random_vector(N * K, 12);
    const Routed base = route(logits, nullptr, N, E, K, kind);
    std::vector<float> dlogits(N * E, 0.0f);
    moe::cpu::router_backward(dlogits.data(), dw.data(), base.idx_NK.data(), base.w_NK.data(), base.scores_NE.data(), N,
                              E, K, kind);
    // Unpicked logits get nothing: the choice itself has no gradient.
    for (int64_t n = 0; n < N; ++n)
      for (int64_t e = 0; e < E; ++e) {
        const int32_t* idx = base.idx_NK.data() + n * K;
        if (std::find(idx, idx + K, e) == idx + K) CHECK(dlogits[n * E + e] == 0.0f);
      }
    auto loss = [&] {
      const Routed r = route(logits, nullptr, N, E, K, kind);
      REQUIRE(r.idx_NK == base.idx_NK);  // premise: the step did not change the choice
      return dot(dw.data(), r.w_NK.data(), N * K);
    };
    check_gradient(loss, logits.data(), dlogits.data(), N * E, 1e-2, 1e-3, 1e-2, N * E);
  }
}

TEST_CASE("router_backward accumulates into dlogits", "[router][grad]") {
  const int64_t N = 3, E = 6, K = 2;
  const std::vector<float> logits = ladder_logits(N, E, 0.5f, 21);
  const std::vector<float> dw = random_vector(N * K, 22);
  const Routed r = route(logits, nullptr, N, E, K, RouterKind::kSigmoidTopK);
  std::vector<float> once(N * E, 0.0f), twice(N * E, 0.0f);
  moe::cpu::router_backward(once.data(), dw.data(), r.idx_NK.data(), r.w_NK.data(), r.scores_NE.data(), N, E, K,
                            RouterKind::kSigmoidTopK);
  for (int i = 0; i < 2; ++i)
    moe::cpu::router_backward(twice.data(), dw.data(), r.idx_NK.data(), r.w_NK.data(), r.scores_NE.data(), N, E, K,
                              RouterKind::kSigmoidTopK);
  REQUIRE(std::any_of(once.begin(), once.end(), [](float v) { return v != 0.0f; }));
  for (int64_t i = 0; i < N * E; ++i) CHECK(twice[i] == Approx(2.0f * once[i]).margin(1e-7));
}

// ---- router_aux_losses ------------------------------------------------------

TEST_CASE("router_aux_losses on a hand-computed softmax example", "[router][aux]") {
  // E = 2, K = 1, B = 2 sequences of T = 2 tokens. Logits [ln a, ln b] give p = (a, b) / (a + b):
  //   n0 [ln3, 0] -> p = [0.75, 0.25], picks 0     lse = ln4
  //   n1 [0, ln3] -> p = [0.25, 0.75], picks 1     lse = ln4
  //   n2 [ln9, 0] -> p = [0.9, 0.1],   picks 0     lse = ln10
  //   n3 [ln4, 0] -> p = [0.8, 0.2],   picks 0     lse = ln5
  // load balance: f = [3/4, 1/4], P = [2.7/4, 1.3/4] = [0.675, 0.325]
  //   -> 2 * (0.75 * 0.675 + 0.25 * 0.325) = 1.175
  // z-loss: (2 ln4^2 + ln10^2 + ln5^2) / 4 = 2.9339532
  // sequence balance: seq 0: f = [1/2, 1/2], P = [1/2, 1/2] -> 1;
  //   seq 1: f = [1, 0], P = [0.85, 0.15] -> 1.7; mean 1.35
  const int64_t B = 2, T = 2, E = 2, K = 1;
  const std::vector<float> logits = {kLn3, 0, 0, kLn3, kLn9, 0, std::log(4.0f), 0};
  const Routed r = route(logits, nullptr, B * T, E, K, RouterKind::kSoftmaxTopK);
  REQUIRE(r.idx_NK == std::vector<int32_t>{0, 1, 0, 0});
  const moe::cpu::RouterAux aux = moe::cpu::router_aux_losses(
      nullptr, logits.data(), r.scores_NE.data(), r.idx_NK.data(), B, T, E, K, RouterKind::kSoftmaxTopK, 1, 1, 1, 1);
  CHECK(aux.load_balance == Approx(1.175).epsilon(1e-6));
  CHECK(aux.z_loss == Approx(2.9339532).epsilon(1e-6));
  CHECK(aux.sequence_balance == Approx(1.35).epsilon(1e-6));

  // K = E = 2: every expert holds half of the N*K pairs, so both balances are
  // E * sum_e (1/E) P_e = 1 whatever P (a count over N instead of N*K gives 2).
  const std::vector<int32_t> both = {0, 1, 0, 1, 0, 1, 0, 1};
  const moe::cpu::RouterAux full = moe::cpu::router_aux_losses(nullptr, logits.data(), r.scores_NE.data(), both.data(),
                                                               B, T, E, 2, RouterKind::kSoftmaxTopK, 1, 1, 1, 1);
  CHECK(full.load_balance == Approx(1.0).epsilon(1e-6));
  CHECK(full.sequence_balance == Approx(1.0).epsilon(1e-6));
}

TEST_CASE("router_aux_losses on a hand-computed sigmoid example", "[router][aux]") {
  // E = 2, K = 1, B = 2, T = 2. The normalised score is q = s / (s0 + s1):
  //   n0 [ln3, -ln3] -> s = [0.75, 0.25], q = [0.75, 0.25],         picks 0, lse = ln(10/3)
  //   n1 [0, ln3]    -> s = [0.5, 0.75],  q = [0.4, 0.6],           picks 1, lse = ln4
  //   n2 [ln9, 0]    -> s = [0.9, 0.5],   q = [9/14, 5/14],         picks 0, lse = ln10
  //   n3 [ln9, ln3]  -> s = [0.9, 0.75],  q = [6/11, 5/11],         picks 0, lse = ln12
  // load balance: f = [3/4, 1/4], P0 = (0.75 + 0.4 + 9/14 + 6/11) / 4, P1 = 1 - P0
  // z-loss: (ln(10/3)^2 + ln4^2 + ln10^2 + ln12^2) / 4 = 3.7120054
  // sequence balance: seq 0 has f = [1/2, 1/2] -> 1; seq 1 has f = [1, 0] -> 2 (9/14 + 6/11) / 2
  const int64_t B = 2, T = 2, E = 2, K = 1;
  const std::vector<float> logits = {kLn3, -kLn3, 0, kLn3, kLn9, 0, kLn9, kLn3};
  const Routed r = route(logits, nullptr, B * T, E, K, RouterKind::kSigmoidTopK);
  REQUIRE(r.idx_NK == std::vector<int32_t>{0, 1, 0, 0});
  const moe::cpu::RouterAux aux = moe::cpu::router_aux_losses(
      nullptr, logits.data(), r.scores_NE.data(), r.idx_NK.data(), B, T, E, K, RouterKind::kSigmoidTopK, 1, 1, 1, 1);
  const double P0 = (0.75 + 0.4 + 9.0 / 14 + 6.0 / 11) / 4;
  CHECK(aux.load_balance == Approx(2 * (0.75 * P0 + 0.25 * (1 - P0))).epsilon(1e-6));
  CHECK(aux.z_loss == Approx(3.7120054).epsilon(1e-6));
  CHECK(aux.sequence_balance == Approx((1 + 2 * (9.0 / 14 + 6.0 / 11) / 2) / 2).epsilon(1e-6));
}

TEST_CASE("router_aux_losses gradient matches finite differences", "[router][aux][grad]") {
  // f comes from topk_idx, which the loss below keeps fixed: that is the
  // "no gradient through the counts" of the contract.
  const int64_t B = 2, T = 3, E = 4, K = 2, N = B * T;
  const float w_lb = 0.7f, w_z = 0.3f, w_seq = 0.5f, grad_scale = 1.5f;
  for (RouterKind kind : {RouterKind::kSoftmaxTopK, RouterKind::kSigmoidTopK}) {
    INFO("kind " << (kind == RouterKind::kSoftmaxTopK ? "softmax_topk" : "sigmoid_topk"));
    std::vector<float> logits = random_vector(N * E, 31);
    const Routed base = route(logits, nullptr, N, E, K, kind);
    std::vector<float> dlogits(N * E, 7.0f);  // garbage: the gradient is written, not added
    const moe::cpu::RouterAux aux =
        moe::cpu::router_aux_losses(dlogits.data(), logits.data(), base.scores_NE.data(), base.idx_NK.data(), B, T, E,
                                    K, kind, w_lb, w_z, w_seq, grad_scale);
    REQUIRE(aux.load_balance > 0);
    REQUIRE(aux.sequence_balance > 0);
    auto loss = [&] {
      const Routed r = route(logits, nullptr, N, E, K, kind);
      const moe::cpu::RouterAux a = moe::cpu::router_aux_losses(nullptr, logits.data(), r.scores_NE.data(),
                                                                base.idx_NK.data(), B, T, E, K, kind, 0, 0, 0, 0);
      return grad_scale * (w_lb * a.load_balance + w_z * a.z_loss + w_seq * a.sequence_balance);
    };
    check_gradient(loss, logits.data(), dlogits.data(), N * E, 1e-2, 1e-3, 1e-2, N * E);
  }
}

// ---- moe_plan ---------------------------------------------------------------

TEST_CASE("moe_plan sorts pairs by expert in token order and drops overflow in token order", "[dispatch]") {
  // N = 4 tokens, K = 2, E = 4 (expert 3 never chosen).
  //   pair:   p0 p1 | p2 p3 | p4 p5 | p6 p7
  //   expert:  0  1 |  1  0 |  1  2 |  0  1
  // expert 0 gets p0 p3 p6, expert 1 gets p1 p2 p4 p7, expert 2 gets p5.
  const int64_t N = 4, K = 2, E = 4;
  const std::vector<int32_t> idx = {0, 1, 1, 0, 1, 2, 0, 1};
  std::vector<int32_t> offsets(E + 1, -9), row_pair(N * K, -9), pair_row(N * K, -9);

  SECTION("no capacity: every pair is kept") {
    CHECK(moe::cpu::moe_plan(offsets.data(), row_pair.data(), pair_row.data(), idx.data(), N, E, K, 0) == 0);
    CHECK(offsets == std::vector<int32_t>{0, 3, 7, 8, 8});
    CHECK(row_pair == std::vector<int32_t>{0, 3, 6, 1, 2, 4, 7, 5});
    CHECK(pair_row == std::vector<int32_t>{0, 3, 4, 1, 5, 7, 2, 6});
  }
  SECTION("capacity 2: the later tokens overflow") {
    // expert 0 keeps p0 p3 (drops p6), expert 1 keeps p1 p2 (drops p4 p7).
    CHECK(moe::cpu::moe_plan(offsets.data(), row_pair.data(), pair_row.data(), idx.data(), N, E, K, 2) == 3);
    CHECK(offsets == std::vector<int32_t>{0, 2, 4, 5, 5});
    CHECK(std::vector<int32_t>(row_pair.begin(), row_pair.begin() + 5) == std::vector<int32_t>{0, 3, 1, 2, 5});
    CHECK(pair_row == std::vector<int32_t>{0, 2, 3, 1, -1, 4, -1, -1});
  }
  SECTION("capacity 2 with a priority: each expert keeps its two highest, placed in token order") {
    //   priority: .1 .5 | .9 .3 | .5 .2 | .7 .5
    // expert 0 (p0 .1, p3 .3, p6 .7) keeps p3 p6; expert 1 (p1 .5, p2 .9,
    // p4 .5, p7 .5) keeps p2 and, of the three tied at .5, the earliest, p1.
    const std::vector<float> priority = {0.1f, 0.5f, 0.9f, 0.3f, 0.5f, 0.2f, 0.7f, 0.5f};
    CHECK(moe::cpu::moe_plan(offsets.data(), row_pair.data(), pair_row.data(), idx.data(), N, E, K, 2,
                             priority.data()) == 3);
    CHECK(offsets == std::vector<int32_t>{0, 2, 4, 5, 5});
    CHECK(std::vector<int32_t>(row_pair.begin(), row_pair.begin() + 5) == std::vector<int32_t>{3, 6, 1, 2, 5});
    CHECK(pair_row == std::vector<int32_t>{-1, 2, 3, 0, -1, 4, 1, -1});
  }
  SECTION("a priority without capacity changes nothing") {
    const std::vector<float> priority = {0.1f, 0.5f, 0.9f, 0.3f, 0.5f, 0.2f, 0.7f, 0.5f};
    CHECK(moe::cpu::moe_plan(offsets.data(), row_pair.data(), pair_row.data(), idx.data(), N, E, K, 0,
                             priority.data()) == 0);
    CHECK(pair_row == std::vector<int32_t>{0, 3, 4, 1, 5, 7, 2, 6});
  }
}

TEST_CASE("moe_count_experts accumulates routed pairs and kept rows per expert", "[dispatch]") {
  // The pairs of the moe_plan example above: experts 0 1 | 1 0 | 1 2 | 0 1, capacity 2.
  const std::vector<int32_t> idx = {0, 1, 1, 0, 1, 2, 0, 1};
  const std::vector<int32_t> offsets = {0, 2, 4, 5, 5};
  std::vector<int32_t> routed(4, 0), kept(4, 0);
  moe::cpu::moe_count_experts(routed.data(), kept.data(), idx.data(), 8, offsets.data(), 4);
  CHECK(routed == std::vector<int32_t>{3, 4, 1, 0});
  CHECK(kept == std::vector<int32_t>{2, 2, 1, 0});
  moe::cpu::moe_count_experts(routed.data(), kept.data(), idx.data(), 8, offsets.data(), 4);  // a second micro-batch
  CHECK(routed == std::vector<int32_t>{6, 8, 2, 0});
  CHECK(kept == std::vector<int32_t>{4, 4, 2, 0});
}

namespace {

struct Plan {
  std::vector<int32_t> offsets_E1, row_pair_M, pair_row_NK;
  int64_t M;
};

Plan plan(const std::vector<int32_t>& idx_NK, int64_t N, int64_t E, int64_t K, int64_t capacity) {
  Plan p{std::vector<int32_t>(E + 1), std::vector<int32_t>(N * K), std::vector<int32_t>(N * K), 0};
  moe::cpu::moe_plan(p.offsets_E1.data(), p.row_pair_M.data(), p.pair_row_NK.data(), idx_NK.data(), N, E, K, capacity);
  p.M = p.offsets_E1[E];
  p.row_pair_M.resize(p.M);
  return p;
}

// Each token picks K distinct experts, seeded.
std::vector<int32_t> random_choices(int64_t N, int64_t E, int64_t K, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<int32_t> experts(E), idx_NK;
  std::iota(experts.begin(), experts.end(), 0);
  for (int64_t n = 0; n < N; ++n) {
    std::shuffle(experts.begin(), experts.end(), gen);
    idx_NK.insert(idx_NK.end(), experts.begin(), experts.begin() + K);
  }
  return idx_NK;
}

}  // namespace

TEST_CASE("permute then unpermute with K = 1 and unit weights is the identity", "[dispatch]") {
  const int64_t N = 9, D = 5, E = 4, K = 1;
  const Plan p = plan(random_choices(N, E, K, 41), N, E, K, 0);
  REQUIRE(p.M == N);
  const std::vector<float> x = random_vector(N * D, 42);
  std::vector<float> xs(p.M * D), out(N * D, 0.0f);
  const std::vector<float> ones(N * K, 1.0f);
  moe::cpu::moe_permute(xs.data(), x.data(), p.pair_row_NK.data(), N, D, K);
  REQUIRE(xs != x);  // the rows really moved
  moe::cpu::moe_unpermute(out.data(), xs.data(), ones.data(), p.pair_row_NK.data(), N, D, K);
  CHECK(out == x);
}

TEST_CASE("moe_permute writes the kept rows only, from each token's pairs", "[dispatch]") {
  const int64_t N = 6, D = 3, E = 3, K = 2;
  const Plan p = plan(random_choices(N, E, K, 55), N, E, K, 3);  // capacity drops some pairs
  REQUIRE(p.M < N * K);
  const std::vector<float> x = random_vector(N * D, 56);
  std::vector<float> xs(N * K * D, -7.0f);  // a buffer for every pair, as the MoE layer keeps
  moe::cpu::moe_permute(xs.data(), x.data(), p.pair_row_NK.data(), N, D, K);
  for (int64_t m = 0; m < N * K; ++m) {
    for (int64_t d = 0; d < D; ++d) {
      const float want = m < p.M ? x[(p.row_pair_M[m] / K) * D + d] : -7.0f;
      CHECK(xs[m * D + d] == want);
    }
  }
}

TEST_CASE("moe_permute_backward matches finite differences and accumulates", "[dispatch][grad]") {
  const int64_t N = 6, D = 3, E = 3, K = 2;
  const Plan p = plan(random_choices(N, E, K, 51), N, E, K, 3);  // capacity drops some pairs
  REQUIRE(p.M < N * K);
  std::vector<float> x = random_vector(N * D, 52);
  const std::vector<float> dxs = random_vector(p.M * D, 53);
  const std::vector<float> prior = random_vector(N * D, 54);
  std::vector<float> dx = prior;
  moe::cpu::moe_permute_backward(dx.data(), dxs.data(), p.pair_row_NK.data(), N, D, K);
  std::vector<float> grad(N * D);
  for (int64_t i = 0; i < N * D; ++i) grad[i] = dx[i] - prior[i];
  std::vector<float> xs(p.M * D);
  auto loss = [&] {
    moe::cpu::moe_permute(xs.data(), x.data(), p.pair_row_NK.data(), N, D, K);
    return dot(dxs.data(), xs.data(), p.M * D);
  };
  check_gradient(loss, x.data(), grad.data(), N * D, 1e-3, 1e-4, 1e-2, N * D);
}

TEST_CASE("moe_unpermute_backward matches finite differences, with drops", "[dispatch][grad]") {
  const int64_t N = 6, D = 3, E = 3, K = 2;
  const Plan p = plan(random_choices(N, E, K, 61), N, E, K, 3);
  REQUIRE(p.M < N * K);
  std::vector<float> ys = random_vector(p.M * D, 62);
  std::vector<float> w = random_vector(N * K, 63);
  const std::vector<float> dout = random_vector(N * D, 64);
  std::vector<float> dys(p.M * D, 7.0f), dw(N * K, 7.0f);  // garbage: both are written
  moe::cpu::moe_unpermute_backward(dys.data(), dw.data(), dout.data(), ys.data(), w.data(), p.pair_row_NK.data(), N, D,
                                   K);
  std::vector<float> out(N * D);
  auto loss = [&] {
    std::fill(out.begin(), out.end(), 0.0f);
    moe::cpu::moe_unpermute(out.data(), ys.data(), w.data(), p.pair_row_NK.data(), N, D, K);
    return dot(dout.data(), out.data(), N * D);
  };
  check_gradient(loss, ys.data(), dys.data(), p.M * D, 1e-3, 1e-4, 1e-2, p.M * D);
  check_gradient(loss, w.data(), dw.data(), N * K, 1e-3, 1e-4, 1e-2, N * K);
  for (int64_t i = 0; i < N * K; ++i)
    if (p.pair_row_NK[i] < 0) CHECK(dw[i] == 0.0f);
}

// ---- grouped matmul -----------------------------------------------------------

namespace {

// Rows 0-2 to expert 0, none to expert 1, rows 3-6 to expert 2.
const std::vector<int32_t> kOffsets = {0, 3, 3, 7};
const int64_t kE = 3, kM = 7, kI = 5, kO = 4;

}  // namespace

TEST_CASE("grouped_matmul_forward matches a naive loop and writes its output", "[grouped_matmul]") {
  const std::vector<float> x = random_vector(kM * kI, 71);
  const std::vector<float> w = random_vector(kE * kI * kO, 72);
  std::vector<float> out(kM * kO, 7.0f);
  moe::cpu::grouped_matmul_forward(out.data(), x.data(), w.data(), kOffsets.data(), kE, kI, kO);
  for (int64_t e = 0; e < kE; ++e)
    for (int64_t m = kOffsets[e]; m < kOffsets[e + 1]; ++m)
      for (int64_t o = 0; o < kO; ++o) {
        double ref = 0;
        for (int64_t i = 0; i < kI; ++i) ref += static_cast<double>(x[m * kI + i]) * w[(e * kI + i) * kO + o];
        CHECK(out[m * kO + o] == Approx(ref).epsilon(1e-5).margin(1e-6));
      }
}

TEST_CASE("grouped_matmul_backward matches finite differences and accumulates", "[grouped_matmul][grad]") {
  std::vector<float> x = random_vector(kM * kI, 81);
  std::vector<float> w = random_vector(kE * kI * kO, 82);
  const std::vector<float> dout = random_vector(kM * kO, 83);
  const std::vector<float> prior_dx = random_vector(kM * kI, 84), prior_dw = random_vector(kE * kI * kO, 85);
  std::vector<float> dx = prior_dx, dw = prior_dw;
  moe::cpu::grouped_matmul_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), kOffsets.data(), kE, kI, kO);
  std::vector<float> grad_x(kM * kI), grad_w(kE * kI * kO);
  for (size_t i = 0; i < dx.size(); ++i) grad_x[i] = dx[i] - prior_dx[i];
  for (size_t i = 0; i < dw.size(); ++i) grad_w[i] = dw[i] - prior_dw[i];

  std::vector<float> out(kM * kO);
  auto loss = [&] {
    moe::cpu::grouped_matmul_forward(out.data(), x.data(), w.data(), kOffsets.data(), kE, kI, kO);
    return dot(dout.data(), out.data(), kM * kO);
  };
  check_gradient(loss, x.data(), grad_x.data(), kM * kI, 1e-3, 1e-4, 1e-2, kM * kI);
  check_gradient(loss, w.data(), grad_w.data(), kE * kI * kO, 1e-3, 1e-4, 1e-2, kE * kI * kO);
  // Expert 1 has no rows: its weight gradient is left exactly as it was.
  for (int64_t i = kI * kO; i < 2 * kI * kO; ++i) CHECK(dw[i] == prior_dw[i]);
}

TEST_CASE("gather_rows copies the indexed rows, bf16 and f32, and refuses an index outside src", "[dispatch]") {
  const std::vector<int32_t> index = {3, 0, 3, 1};
  std::vector<float> src(5 * 3), dst(6 * 3, -1.0f);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i);
  moe::ops::gather_rows(moe::view_of(dst.data(), {6, 3}), moe::view_of(src.data(), {5, 3}),
                        moe::view_of(const_cast<int32_t*>(index.data()), {4}, moe::DType::kI32));
  CHECK(dst == std::vector<float>{9, 10, 11, 0, 1, 2, 9, 10, 11, 3, 4, 5, -1, -1, -1, -1, -1, -1});
  std::vector<uint16_t> src16 = {1, 2, 3, 4}, dst16(4, 0);
  const std::vector<int32_t> swap = {1, 0};
  moe::ops::gather_rows(moe::view_of(dst16.data(), {2, 2}, moe::DType::kBF16),
                        moe::view_of(src16.data(), {2, 2}, moe::DType::kBF16),
                        moe::view_of(const_cast<int32_t*>(swap.data()), {2}, moe::DType::kI32));
  CHECK(dst16 == std::vector<uint16_t>{3, 4, 1, 2});
  const std::vector<int32_t> bad = {5};
  CHECK_THROWS_WITH(moe::ops::gather_rows(moe::view_of(dst.data(), {6, 3}), moe::view_of(src.data(), {5, 3}),
                                          moe::view_of(const_cast<int32_t*>(bad.data()), {1}, moe::DType::kI32)),
                    Catch::Contains("outside the 5 rows"));
}
