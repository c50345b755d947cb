// The dense CPU reference kernels: each backward against central finite
// differences of loss = dot(dout, forward(x)), each forward against a naive
// computation written here (mostly in double), plus the += convention.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <vector>

#include "src/kernels/cpu/cpu_ops.h"
#include "tests/kernels/grad_check.h"

namespace moe::cpu {
namespace {

using test::check_gradient;
using test::dot;
using test::random_vector;
using Vec = std::vector<float>;

int64_t size(const Vec& v) { return static_cast<int64_t>(v.size()); }

void check_close(const Vec& actual, const std::vector<double>& expected, double tol) {
  REQUIRE(actual.size() == expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    INFO("index " << i << ": actual " << actual[i] << ", expected " << expected[i]);
    CHECK(std::abs(actual[i] - expected[i]) <= tol * (1 + std::abs(expected[i])));
  }
}

// ---- embedding ---------------------------------------------------------------

TEST_CASE("embedding forward copies the table row of each token") {
  const int64_t V = 5, D = 8;
  const std::vector<int32_t> tokens = {3, 1, 3, 0};
  const int64_t N = static_cast<int64_t>(tokens.size());
  const Vec table = random_vector(V * D, 1);
  Vec out(N * D);
  embedding_forward(out.data(), tokens.data(), table.data(), N, D);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t d = 0; d < D; ++d) CHECK(out[n * D + d] == table[tokens[n] * D + d]);
  }
}

TEST_CASE("embedding backward matches finite differences, repeated tokens add up") {
  const int64_t V = 5, D = 8;
  const std::vector<int32_t> tokens = {3, 1, 3, 0, 3, 4};  // 3 three times, 2 never
  const int64_t N = static_cast<int64_t>(tokens.size());
  Vec table = random_vector(V * D, 2);
  const Vec dout = random_vector(N * D, 3);
  Vec dtable(V * D, 0.0f);
  embedding_backward(dtable.data(), dout.data(), tokens.data(), N, D);
  for (int64_t d = 0; d < D; ++d) {
    CHECK(dtable[3 * D + d] == Approx(dout[0 * D + d] + dout[2 * D + d] + dout[4 * D + d]));
    CHECK(dtable[2 * D + d] == 0.0f);
  }
  Vec out(N * D);
  auto loss = [&] {
    embedding_forward(out.data(), tokens.data(), table.data(), N, D);
    return dot(dout.data(), out.data(), N * D);
  };
  check_gradient(loss, table.data(), dtable.data(), V * D);
}

// ---- RMSNorm -----------------------------------------------------------------

TEST_CASE("rmsnorm forward matches the formula in double") {
  const int64_t N = 6, D = 8;
  const float eps = 1e-5f;
  const Vec x = random_vector(N * D, 4, 3.0f);
  const Vec w = random_vector(D, 5);
  Vec out(N * D), rstd(N);
  rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, D, eps);
  std::vector<double> expected_out(N * D), expected_rstd(N);
  for (int64_t n = 0; n < N; ++n) {
    double ms = 0;
    for (int64_t d = 0; d < D; ++d) ms += static_cast<double>(x[n * D + d]) * x[n * D + d] / D;
    expected_rstd[n] = 1 / std::sqrt(ms + eps);
    for (int64_t d = 0; d < D; ++d) expected_out[n * D + d] = x[n * D + d] * expected_rstd[n] * w[d];
  }
  check_close(out, expected_out, 1e-6);
  check_close(rstd, expected_rstd, 1e-6);
}

TEST_CASE("rmsnorm backward matches finite differences for x and w, and accumulates") {
  const int64_t N = 6, D = 8;
  const float eps = 1e-5f;
  Vec x = random_vector(N * D, 6);
  Vec w = random_vector(D, 7);
  const Vec dout = random_vector(N * D, 8);
  Vec out(N * D), rstd(N);
  rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, D, eps);
  Vec dx(N * D, 0.0f), dw(D, 0.0f);
  rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N, D);

  auto loss = [&] {
    Vec o(N * D), r(N);
    rmsnorm_forward(o.data(), r.data(), x.data(), w.data(), N, D, eps);
    return dot(dout.data(), o.data(), N * D);
  };
  SECTION("dx") { check_gradient(loss, x.data(), dx.data(), N * D); }
  SECTION("dw") { check_gradient(loss, w.data(), dw.data(), D); }
  SECTION("+= into pre-filled gradients") {
    Vec dx_acc = random_vector(N * D, 9), dw_acc = random_vector(D, 10);
    const Vec dx_before = dx_acc, dw_before = dw_acc;
    rmsnorm_backward(dx_acc.data(), dw_acc.data(), dout.data(), x.data(), w.data(), rstd.data(), N, D);
    for (int64_t i = 0; i < N * D; ++i) CHECK(dx_acc[i] == Approx(dx_before[i] + dx[i]).margin(1e-6));
    for (int64_t i = 0; i < D; ++i) CHECK(dw_acc[i] == Approx(dw_before[i] + dw[i]).margin(1e-6));
  }
}

// ---- matmul --------------------------------------------------------------------

TEST_CASE("matmul forward is x W^T") {
  const int64_t N = 6, I = 8, O = 5;
  const Vec x = random_vector(N * I, 11);
  const Vec w = random_vector(O * I, 12);
  Vec out(N * O, 123.0f);  // stale values must be overwritten
  matmul_forward(out.data(), x.data(), w.data(), N, I, O);
  std::vector<double> expected(N * O, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < I; ++i) expected[n * O + o] += static_cast<double>(x[n * I + i]) * w[o * I + i];
  check_close(out, expected, 1e-5);
}

TEST_CASE("matmul backward matches finite differences for x and W, and accumulates") {
  const int64_t N = 6, I = 8, O = 5;
  Vec x = random_vector(N * I, 13);
  Vec w = random_vector(O * I, 14);
  const Vec dout = random_vector(N * O, 15);
  Vec dx(N * I, 0.0f), dw(O * I, 0.0f);
  matmul_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), N, I, O);

  auto loss = [&] {
    Vec out(N * O);
    matmul_forward(out.data(), x.data(), w.data(), N, I, O);
    return dot(dout.data(), out.data(), N * O);
  };
  SECTION("dx") { check_gradient(loss, x.data(), dx.data(), N * I); }
  SECTION("dW") { check_gradient(loss, w.data(), dw.data(), O * I); }
  SECTION("+= into pre-filled gradients") {
    Vec dx_acc(N * I, 1.0f), dw_acc(O * I, -2.0f);
    matmul_backward(dx_acc.data(), dw_acc.data(), dout.data(), x.data(), w.data(), N, I, O);
    for (int64_t i = 0; i < N * I; ++i) CHECK(dx_acc[i] == Approx(1.0f + dx[i]).margin(1e-6));
    for (int64_t i = 0; i < O * I; ++i) CHECK(dw_acc[i] == Approx(-2.0f + dw[i]).margin(1e-6));
  }
  SECTION("null dx still gives dW") {
    Vec dw_only(O * I, 0.0f);
    matmul_backward(nullptr, dw_only.data(), dout.data(), x.data(), w.data(), N, I, O);
    for (int64_t i = 0; i < O * I; ++i) CHECK(dw_only[i] == dw[i]);
  }
}

// ---- RoPE ------------------------------------------------------------------------

TEST_CASE("rope forward rotates channel pairs (i, i + Dh/2) by pos * theta^(-2i/Dh)") {
  const int64_t B = 2, T = 4, H = 2, Dh = 8;
  const float theta = 10000.0f;
  const int64_t N = B * T;
  const Vec x = random_vector(N * H * Dh, 16);
  Vec y = x;
  rope_forward(y.data(), N, T, H, Dh, theta);
  std::vector<double> expected(x.size());
  for (int64_t n = 0; n < N; ++n) {
    const double pos = static_cast<double>(n % T);  // row 6 is position 2 of sequence 1
    for (int64_t h = 0; h < H; ++h) {
      const int64_t base = (n * H + h) * Dh;
      for (int64_t i = 0; i < Dh / 2; ++i) {
        const double angle = pos * std::pow(static_cast<double>(theta), -2.0 * i / Dh);
        const double lo = x[base + i], hi = x[base + i + Dh / 2];
        expected[base + i] = lo * std::cos(angle) - hi * std::sin(angle);
        expected[base + i + Dh / 2] = hi * std::cos(angle) + lo * std::sin(angle);
      }
    }
  }
  check_close(y, expected, 1e-5);
  // Position 0 (rows 0 and T) is the identity.
  for (int64_t j = 0; j < H * Dh; ++j) {
    CHECK(y[j] == x[j]);
    CHECK(y[T * H * Dh + j] == x[T * H * Dh + j]);
  }
}

TEST_CASE("rope backward inverts the forward and matches finite differences") {
  const int64_t B = 2, T = 5, H = 2, Dh = 8;
  const float theta = 500.0f;
  const int64_t N = B * T, n_el = N * H * Dh;
  Vec x = random_vector(n_el, 17);
  SECTION("forward then backward is the identity") {
    Vec y = x;
    rope_forward(y.data(), N, T, H, Dh, theta);
    rope_backward(y.data(), N, T, H, Dh, theta);
    for (int64_t i = 0; i < n_el; ++i) CHECK(y[i] == Approx(x[i]).margin(1e-5));
  }
  SECTION("gradient") {
    const Vec dout = random_vector(n_el, 18);
    Vec dx = dout;  // rope_backward maps the gradient in place
    rope_backward(dx.data(), N, T, H, Dh, theta);
    auto loss = [&] {
      Vec y = x;
      rope_forward(y.data(), N, T, H, Dh, theta);
      return dot(dout.data(), y.data(), n_el);
    };
    check_gradient(loss, x.data(), dx.data(), n_el, 1e-2, 1e-3, 1e-2, n_el);
  }
}

// ---- attention -----------------------------------------------------------------------

struct AttnShape {
  int64_t B, T, H, G, Dh;
  int64_t q_size() const { return B * T * H * Dh; }
  int64_t kv_size() const { return B * T * G * Dh; }
  int64_t lse_size() const { return B * H * T; }
};

// softmax(q k^T / sqrt(Dh) + causal mask) v in double, one (b, t, h) at a time.
void naive_attention(std::vector<double>& out, std::vector<double>& lse, const Vec& q, const Vec& k, const Vec& v,
                     const AttnShape& s) {
  out.assign(s.q_size(), 0.0);
  lse.assign(s.lse_size(), 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.Dh));
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t h = 0; h < s.H; ++h) {
      const int64_t g = h / (s.H / s.G);
      for (int64_t t = 0; t < s.T; ++t) {
        const float* q_row = &q[((b * s.T + t) * s.H + h) * s.Dh];
        std::vector<double> score(t + 1);
        double max = -1e300;
        for (int64_t j = 0; j <= t; ++j) {
          score[j] = scale * dot(q_row, &k[((b * s.T + j) * s.G + g) * s.Dh], s.Dh);
          max = std::max(max, score[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j <= t; ++j) sum += std::exp(score[j] - max);
        lse[(b * s.H + h) * s.T + t] = max + std::log(sum);
        for (int64_t j = 0; j <= t; ++j) {
          const double p = std::exp(score[j] - max) / sum;
          for (int64_t d = 0; d < s.Dh; ++d) {
            out[((b * s.T + t) * s.H + h) * s.Dh + d] += p * v[((b * s.T + j) * s.G + g) * s.Dh + d];
          }
        }
      }
    }
  }
}

// T = 150 crosses the kernel's blocks of query rows, the last one partial.
const AttnShape kSmall{2, 5, 4, 2, 8};
const AttnShape kLong{1, 150, 2, 1, 8};

TEST_CASE("attention forward matches naive causal softmax(q k^T / sqrt(Dh)) v with grouped KV") {
  const AttnShape s = GENERATE(kSmall, kLong);
  INFO("B=" << s.B << " T=" << s.T << " H=" << s.H << " G=" << s.G << " Dh=" << s.Dh);
  const Vec q = random_vector(s.q_size(), 19, 2.0f);
  const Vec k = random_vector(s.kv_size(), 20);
  const Vec v = random_vector(s.kv_size(), 21);
  Vec out(s.q_size()), lse(s.lse_size());
  attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.T, s.H, s.G, s.Dh);
  std::vector<double> expected_out, expected_lse;
  naive_attention(expected_out, expected_lse, q, k, v, s);
  check_close(out, expected_out, 1e-5);
  check_close(lse, expected_lse, 1e-5);
}

TEST_CASE("attention is causal: a later token's k and v do not change earlier outputs") {
  const AttnShape s = kSmall;
  const Vec q = random_vector(s.q_size(), 22);
  Vec k = random_vector(s.kv_size(), 23);
  Vec v = random_vector(s.kv_size(), 24);
  Vec out(s.q_size()), lse(s.lse_size());
  attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.T, s.H, s.G, s.Dh);
  const int64_t b = 1, t_changed = 3;
  for (int64_t j = 0; j < s.G * s.Dh; ++j) {
    k[(b * s.T + t_changed) * s.G * s.Dh + j] += 1.5f;
    v[(b * s.T + t_changed) * s.G * s.Dh + j] -= 2.0f;
  }
  Vec out2(s.q_size()), lse2(s.lse_size());
  attention_forward(out2.data(), lse2.data(), q.data(), k.data(), v.data(), s.B, s.T, s.H, s.G, s.Dh);
  const int64_t row = s.H * s.Dh;
  for (int64_t t = 0; t < s.T; ++t) {
    for (int64_t j = 0; j < row; ++j) {
      const int64_t i0 = (0 * s.T + t) * row + j, i1 = (b * s.T + t) * row + j;
      CHECK(out2[i0] == out[i0]);  // the other sequence
      if (t < t_changed) CHECK(out2[i1] == out[i1]);
    }
  }
  for (int64_t t = t_changed; t < s.T; ++t) {
    double change = 0;
    for (int64_t j = 0; j < row; ++j) {
      const int64_t i1 = (b * s.T + t) * row + j;
      change += std::abs(out2[i1] - out[i1]);
    }
    CHECK(change > 1e-3);
  }
}

TEST_CASE("attention backward matches finite differences for q, k and v") {
  const AttnShape s = GENERATE(kSmall, kLong);
  INFO("B=" << s.B << " T=" << s.T << " H=" << s.H << " G=" << s.G << " Dh=" << s.Dh);
  Vec q = random_vector(s.q_size(), 25);
  Vec k = random_vector(s.kv_size(), 26);
  Vec v = random_vector(s.kv_size(), 27);
  const Vec dout = random_vector(s.q_size(), 28);
  Vec out(s.q_size()), lse(s.lse_size());
  attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.T, s.H, s.G, s.Dh);
  Vec dq(s.q_size(), 0.0f), dk(s.kv_size(), 0.0f), dv(s.kv_size(), 0.0f);
  attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(), lse.data(),
                     s.B, s.T, s.H, s.G, s.Dh);

  auto loss = [&] {
    Vec o(s.q_size()), l(s.lse_size());
    attention_forward(o.data(), l.data(), q.data(), k.data(), v.data(), s.B, s.T, s.H, s.G, s.Dh);
    return dot(dout.data(), o.data(), s.q_size());
  };
  SECTION("dq") { check_gradient(loss, q.data(), dq.data(), s.q_size()); }
  SECTION("dk") { check_gradient(loss, k.data(), dk.data(), s.kv_size()); }
  SECTION("dv") { check_gradient(loss, v.data(), dv.data(), s.kv_size()); }
  SECTION("+= into pre-filled gradients") {
    Vec dq_acc = random_vector(s.q_size(), 29), dk_acc = random_vector(s.kv_size(), 30),
        dv_acc = random_vector(s.kv_size(), 31);
    const Vec dq_before = dq_acc, dk_before = dk_acc, dv_before = dv_acc;
    attention_backward(dq_acc.data(), dk_acc.data(), dv_acc.data(), dout.data(), q.data(), k.data(), v.data(),
                       out.data(), lse.data(), s.B, s.T, s.H, s.G, s.Dh);
    for (int64_t i = 0; i < s.q_size(); ++i) CHECK(dq_acc[i] == Approx(dq_before[i] + dq[i]).margin(1e-5));
    for (int64_t i = 0; i < s.kv_size(); ++i) CHECK(dk_acc[i] == Approx(dk_before[i] + dk[i]).margin(1e-5));
    for (int64_t i = 0; i < s.kv_size(); ++i) CHECK(dv_acc[i] == Approx(dv_before[i] + dv[i]).margin(1e-5));
  }
}

// ---- SwiGLU ------------------------------------------------------------------------------

TEST_CASE("swiglu forward is a * sigmoid(a) * b, finite at extreme gates") {
  const Vec a = {-1000.0f, -3.0f, 0.0f, 0.5f, 2.0f, 1000.0f};
  const Vec b = {2.0f, -1.0f, 4.0f, 3.0f, 0.25f, 1.5f};
  Vec out(a.size());
  swiglu_forward(out.data(), a.data(), b.data(), size(a));
  std::vector<double> expected(a.size());
  for (size_t i = 0; i < a.size(); ++i) expected[i] = a[i] / (1 + std::exp(-static_cast<double>(a[i]))) * b[i];
  check_close(out, expected, 1e-6);
  Vec da(a.size(), 0.0f), db(a.size(), 0.0f);
  const Vec dout(a.size(), 1.0f);
  swiglu_backward(da.data(), db.data(), dout.data(), a.data(), b.data(), size(a));
  for (size_t i = 0; i < a.size(); ++i) CHECK((std::isfinite(da[i]) && std::isfinite(db[i])));
  CHECK(da[5] == Approx(1.5f));  // silu'(a) -> 1 for large a
  CHECK(da[0] == 0.0f);          // and -> 0 for very negative a
}

TEST_CASE("swiglu backward matches finite differences for a and b") {
  const int64_t n = 48;
  Vec a = random_vector(n, 32, 2.0f);
  Vec b = random_vector(n, 33);
  const Vec dout = random_vector(n, 34);
  Vec da(n, 0.0f), db(n, 0.0f);
  swiglu_backward(da.data(), db.data(), dout.data(), a.data(), b.data(), n);
  auto loss = [&] {
    Vec out(n);
    swiglu_forward(out.data(), a.data(), b.data(), n);
    return dot(dout.data(), out.data(), n);
  };
  SECTION("da") { check_gradient(loss, a.data(), da.data(), n); }
  SECTION("db") { check_gradient(loss, b.data(), db.data(), n); }
}

// ---- cross-entropy -----------------------------------------------------------------------

TEST_CASE("cross-entropy on a hand-computed 3-class example") {
  // Row 0: logits (1, 2, 3), target 0: loss = log(e + e^2 + e^3) - 1.
  // Row 1: equal logits, target 2: loss = log 3. Shifting by 1000 changes nothing.
  const float shift = GENERATE(0.0f, 1000.0f);
  const Vec logits = {1 + shift, 2 + shift, 3 + shift, shift, shift, shift};
  const std::vector<int32_t> targets = {0, 2};
  const float grad_scale = 0.5f;
  Vec loss(2), dlogits(6);
  cross_entropy_forward_backward(loss.data(), dlogits.data(), logits.data(), targets.data(), 2, 3, grad_scale);
  CHECK(loss[0] == Approx(2.40760596444438).epsilon(1e-6));
  CHECK(loss[1] == Approx(1.0986122886681098).epsilon(1e-6));
  const std::vector<double> expected = {0.5 * (0.09003057317038046 - 1),
                                        0.5 * 0.24472847105479767,
                                        0.5 * 0.6652409557748219,
                                        0.5 / 3,
                                        0.5 / 3,
                                        0.5 * (1.0 / 3 - 1)};
  check_close(dlogits, expected, 1e-5);
}

TEST_CASE("cross-entropy gradient matches finite differences and works in place") {
  const int64_t n = 4, V = 7;
  const float grad_scale = 0.25f;
  Vec logits = random_vector(n * V, 35, 2.0f);
  const std::vector<int32_t> targets = {6, 0, 3, 3};
  Vec loss(n), dlogits(n * V);
  cross_entropy_forward_backward(loss.data(), dlogits.data(), logits.data(), targets.data(), n, V, grad_scale);
  SECTION("gradient") {
    auto total = [&] {
      Vec l(n), d(n * V);
      cross_entropy_forward_backward(l.data(), d.data(), logits.data(), targets.data(), n, V, grad_scale);
      double s = 0;
      for (float x : l) s += grad_scale * static_cast<double>(x);
      return s;
    };
    check_gradient(total, logits.data(), dlogits.data(), n * V);
  }
  SECTION("dlogits aliasing logits gives the same numbers") {
    Vec in_place = logits, loss2(n);
    cross_entropy_forward_backward(loss2.data(), in_place.data(), in_place.data(), targets.data(), n, V, grad_scale);
    for (int64_t i = 0; i < n; ++i) CHECK(loss2[i] == loss[i]);
    for (int64_t i = 0; i < n * V; ++i) CHECK(in_place[i] == dlogits[i]);
  }
}

// ---- optimizer -----------------------------------------------------------------------------

// The hyperparameters below are exact in fp32 (0.999f is not), so the hand
// numbers need no allowance for the rounding of the betas themselves.
TEST_CASE("adamw first step by hand") {
  // lr 0.125, wd 0.5, b1 0.75, b2 0.9375, grad_scale 2, t = 1: the bias
  // corrections make the step lr * sign(g).
  // p0: 1 * (1 - 0.0625) = 0.9375; g = 1; m = 0.25; v = 0.0625; p = 0.9375 - 0.125 / (1 + 1e-8).
  // p1: -2 * 0.9375 = -1.875; g = -0.2; m = -0.05; v = 0.0025; p = -1.875 + 0.125 * 0.2 / (0.2 + 1e-8).
  Vec p = {1.0f, -2.0f}, grad = {0.5f, -0.1f}, m = {0.0f, 0.0f}, v = {0.0f, 0.0f};
  adamw_step(p.data(), grad.data(), m.data(), v.data(), 2, 0.125f, 0.75f, 0.9375f, 1e-8f, 0.5f, 1, 2.0f);
  CHECK(p[0] == Approx(0.8125).epsilon(1e-6));
  CHECK(p[1] == Approx(-1.75).epsilon(1e-6));
  CHECK(m[0] == Approx(0.25).epsilon(1e-6));
  CHECK(m[1] == Approx(-0.05).epsilon(1e-6));
  CHECK(v[0] == Approx(0.0625).epsilon(1e-6));
  CHECK(v[1] == Approx(0.0025).epsilon(1e-6));
}

TEST_CASE("adamw third step with existing moments by hand") {
  // p 0.5, g 0.3, m 0.2, v 0.05, lr 0.01, b1 0.875, b2 0.984375, eps 1e-6, wd 0.1, t 3:
  // p = 0.5 * 0.999 = 0.4995; m = 0.175 + 0.0375 = 0.2125; v = 0.04921875 + 0.00140625 = 0.050625;
  // 1 - b1^3 = 0.330078125; 1 - b2^3 = 0.046146392822265625;
  // p = 0.4995 - 0.01 * (m / 0.330078125) / (sqrt(v / 0.046146392822265625) + 1e-6) = 0.49335349644213794.
  Vec p = {0.5f}, grad = {0.3f}, m = {0.2f}, v = {0.05f};
  adamw_step(p.data(), grad.data(), m.data(), v.data(), 1, 0.01f, 0.875f, 0.984375f, 1e-6f, 0.1f, 3, 1.0f);
  CHECK(m[0] == Approx(0.2125).epsilon(1e-6));
  CHECK(v[0] == Approx(0.050625).epsilon(1e-6));
  CHECK(p[0] == Approx(0.49335349644213794).epsilon(1e-6));
}

TEST_CASE("sum_squares accumulates in double; scale_inplace scales") {
  const Vec small = {1.0f, -2.0f, 3.0f};
  CHECK(sum_squares(small.data(), 3) == 14.0);
  // 1e8 + 1000 * 1e-4: in fp32 the small terms would vanish (ulp of 1e8 is 8).
  Vec mixed(1001, 1e-2f);
  mixed[0] = 1e4f;
  CHECK(sum_squares(mixed.data(), size(mixed)) == Approx(1e8 + 0.1).epsilon(1e-12));
  Vec x = {1.0f, -2.0f, 4.0f};
  scale_inplace(x.data(), 3, 0.5f);
  CHECK(x == Vec{0.5f, -1.0f, 2.0f});
}

}  // namespace
}  // namespace moe::cpu
