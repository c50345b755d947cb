// The MoE ops of the CUDA backend (router, aux losses, dispatch plan,
// permute/unpermute and their backwards), called through ops.h on device
// tensors and held against the CPU reference (src/kernels/cpu) on the same
// inputs. Integers (top-k indices, the plan) must match exactly; floats within
// the tolerance stated at each check, with the reason.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "src/kernels/cpu/cpu_ops.h"
#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/ops.h"
#include "tests/gpu/gpu_test_util.h"

using moe::DType;
using moe::Tensor;
using moe::cpu::RouterKind;
using moe::test::bf16_rounded;
using moe::test::check_close;
using moe::test::device_tensor;
using moe::test::DeviceTensor;
using moe::test::download;
using moe::test::random_vector;
using moe::test::upload;
using moe::test::upload_i32;
namespace ops = moe::ops;
namespace cpu = moe::cpu;

namespace {

// The helpers of gpu_test_util.h fill buffers with cudaMemset / cudaMemcpy on
// the legacy default stream, which the backend's non-blocking stream does not
// wait for (and a pageable cudaMemcpy may return before its DMA lands): settle
// the device before an op reads what was uploaded.
void settle() { moe::cuda::check(cudaDeviceSynchronize(), "test settle"); }

std::vector<int32_t> download_i32(const Tensor& t) {
  moe::cuda::check(cudaStreamSynchronize(moe::cuda::stream()), "test sync");
  std::vector<int32_t> out(static_cast<size_t>(t.numel()));
  moe::cuda::check(cudaMemcpy(out.data(), t.data, out.size() * 4, cudaMemcpyDeviceToHost), "test download");
  return out;
}

void check_equal(const std::vector<int32_t>& got, const std::vector<int32_t>& want, const std::string& what) {
  REQUIRE(got.size() == want.size());
  const auto diff = std::mismatch(got.begin(), got.end(), want.begin());
  const size_t at = static_cast<size_t>(diff.first - got.begin());
  INFO(what << ": first difference at " << at << " of " << got.size()
            << (at < got.size() ? ": got " + std::to_string(got[at]) + ", want " + std::to_string(want[at]) : ""));
  CHECK(at == got.size());
}

void check_bitwise(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  check_close(got, want, 0.0, 0.0, what);
}

const char* name_of(RouterKind kind) { return kind == RouterKind::kSoftmaxTopK ? "softmax_topk" : "sigmoid_topk"; }
const char* name_of(DType t) { return t == DType::kBF16 ? "bf16" : "f32"; }

// What the CPU reference sees of an upload: bf16 uploads are rounded.
std::vector<float> as_uploaded(const std::vector<float>& v, DType t) { return t == DType::kBF16 ? bf16_rounded(v) : v; }

// One bf16 rounding of a result: |error| <= 2^-9 of its magnitude; 2^-8 leaves room.
constexpr double kBf16Rtol = 1.0 / 256;

// ---- routing inputs --------------------------------------------------------

// Gaussian logits with exact ties planted where they decide the choice (equal
// logits give equal scores bit for bit on both backends, and the test bias
// below is equal on experts with the same e % 3):
//   row 0: every logit equal;
//   row 1: experts 1, 4, 7, 37, 40, 97 (those < E) tie for first: other
//          lanes, and the same lane (1, 97) at another place of its mask;
//   row 2: expert 0 first, then 3 and 6 tie at the second place;
//   row 3: experts E-4 and E-1 tie for first.
std::vector<float> tied_logits(int64_t N, int64_t E, uint64_t seed) {
  std::vector<float> l = random_vector(N * E, seed);
  std::fill(l.begin(), l.begin() + E, 0.25f);
  for (int64_t e : {1, 4, 7, 37, 40, 97})
    if (e < E) l[E + e] = 7.0f;
  l[2 * E + 0] = 8.0f;
  l[2 * E + 3] = l[2 * E + 6] = 6.0f;
  l[3 * E + E - 4] = l[3 * E + E - 1] = 7.5f;
  return l;
}

// bias_e = 0.001 * (e % 3): too small to lift a Gaussian logit over the
// planted ties, and equal on each set of tied experts (same e % 3).
std::vector<float> test_bias(int64_t E) {
  std::vector<float> b(E);
  for (int64_t e = 0; e < E; ++e) b[e] = 0.001f * static_cast<float>(e % 3);
  return b;
}

struct Routed {
  std::vector<int32_t> idx_NK;
  std::vector<float> w_NK, scores_NE;
};

Routed cpu_route(const std::vector<float>& logits, const float* bias, int64_t N, int64_t E, int64_t K,
                 RouterKind kind) {
  Routed r{std::vector<int32_t>(N * K), std::vector<float>(N * K), std::vector<float>(N * E)};
  cpu::router_forward(r.idx_NK.data(), r.w_NK.data(), r.scores_NE.data(), logits.data(), bias, N, E, K, kind);
  return r;
}

// Each token picks K distinct experts; with `skew`, expert 0 is among them
// for about that share of the tokens (to overflow its capacity).
std::vector<int32_t> random_choices(int64_t N, int64_t E, int64_t K, uint64_t seed, double skew = 0) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> coin(0, 1);
  std::vector<int32_t> experts(E), idx_NK;
  std::iota(experts.begin(), experts.end(), 0);
  for (int64_t n = 0; n < N; ++n) {
    std::shuffle(experts.begin(), experts.end(), gen);
    if (coin(gen) < skew) std::swap(experts[0], *std::find(experts.begin(), experts.end(), 0));
    idx_NK.insert(idx_NK.end(), experts.begin(), experts.begin() + K);
  }
  return idx_NK;
}

struct HostPlan {
  std::vector<int32_t> offsets_E1, row_pair_M, pair_row_NK;
  int64_t M = 0, dropped = 0;
};

HostPlan cpu_plan(const std::vector<int32_t>& idx_NK, int64_t N, int64_t E, int64_t K, int64_t capacity) {
  HostPlan p{std::vector<int32_t>(E + 1), std::vector<int32_t>(N * K), std::vector<int32_t>(N * K)};
  p.dropped =
      cpu::moe_plan(p.offsets_E1.data(), p.row_pair_M.data(), p.pair_row_NK.data(), idx_NK.data(), N, E, K, capacity);
  p.M = p.offsets_E1[E];
  p.row_pair_M.resize(p.M);
  return p;
}

struct DevicePlan {
  DeviceTensor offsets_E1, row_pair_M, pair_row_NK;
  int64_t M = 0;  // offsets_E1[E], read back by the test
};

// The plan on the GPU, buffers shaped as the MoE layer shapes them; row_pair
// starts as garbage (the GPU uses it as scratch, the CPU never reads it).
DevicePlan gpu_plan(const std::vector<int32_t>& idx_NK, int64_t N, int64_t E, int64_t K, int64_t capacity) {
  DevicePlan d{upload_i32(std::vector<int32_t>(E + 1, -7), {E + 1}),
               upload_i32(std::vector<int32_t>(N * K, -7), {N * K}),
               upload_i32(std::vector<int32_t>(N * K, -7), {N, K}), 0};
  const DeviceTensor idx = upload_i32(idx_NK, {N, K});
  settle();
  ops::moe_plan(d.offsets_E1.t, d.row_pair_M.t, d.pair_row_NK.t, idx.t, capacity);
  d.M = download_i32(d.offsets_E1.t).back();
  return d;
}

void check_plan(const DevicePlan& got, const HostPlan& want, const std::string& what) {
  INFO(what);
  CHECK(got.M == want.M);
  check_equal(download_i32(got.offsets_E1.t), want.offsets_E1, "offsets_E1");
  std::vector<int32_t> row_pair = download_i32(got.row_pair_M.t);
  row_pair.resize(static_cast<size_t>(std::max<int64_t>(0, std::min<int64_t>(got.M, row_pair.size()))));
  check_equal(row_pair, want.row_pair_M, "row_pair_M (first M)");
  check_equal(download_i32(got.pair_row_NK.t), want.pair_row_NK, "pair_row_NK");
}

}  // namespace

// ---- router_forward / router_backward ---------------------------------------

TEST_CASE("GPU router_forward matches the CPU: indices exactly, ties to the lower index", "[gpu][router]") {
  struct Shape {
    int64_t N, E, K;
  };
  for (const Shape sh : {Shape{37, 8, 2}, Shape{37, 64, 4}, Shape{9, 256, 8}, Shape{6, 2048, 32}}) {
    for (RouterKind kind : {RouterKind::kSoftmaxTopK, RouterKind::kSigmoidTopK}) {
      for (bool with_bias : {false, true}) {
        const int64_t N = sh.N, E = sh.E, K = sh.K;
        INFO(name_of(kind) << (with_bias ? " with bias" : " without bias") << ", N = " << N << ", E = " << E
                           << ", K = " << K);
        const std::vector<float> logits = tied_logits(N, E, 100 + E);
        const std::vector<float> bias = test_bias(E);
        // softmax_topk ignores the bias on both backends; passing one checks that.
        const Routed want = cpu_route(logits, with_bias ? bias.data() : nullptr, N, E, K, kind);
        // The premise: the planted ties are real and decide the choice.
        const bool biased_sigmoid = with_bias && kind == RouterKind::kSigmoidTopK;
        CHECK(std::vector<int32_t>(want.idx_NK.begin(), want.idx_NK.begin() + 2) ==
              (biased_sigmoid ? std::vector<int32_t>{2, 5} : std::vector<int32_t>{0, 1}));
        CHECK(std::vector<int32_t>(want.idx_NK.begin() + K, want.idx_NK.begin() + K + 2) == std::vector<int32_t>{1, 4});
        CHECK(std::vector<int32_t>(want.idx_NK.begin() + 2 * K, want.idx_NK.begin() + 2 * K + 2) ==
              std::vector<int32_t>{0, 3});
        CHECK(std::vector<int32_t>(want.idx_NK.begin() + 3 * K, want.idx_NK.begin() + 3 * K + 2) ==
              std::vector<int32_t>{static_cast<int32_t>(E - 4), static_cast<int32_t>(E - 1)});

        const DeviceTensor d_logits = upload(logits, {N, E}, DType::kF32);
        const DeviceTensor d_bias = upload(bias, {E}, DType::kF32);
        DeviceTensor d_idx = upload_i32(std::vector<int32_t>(N * K, -7), {N, K});
        DeviceTensor d_w = upload(std::vector<float>(N * K, 7.0f), {N, K}, DType::kF32);
        DeviceTensor d_scores = upload(std::vector<float>(N * E, 7.0f), {N, E}, DType::kF32);
        settle();
        ops::router_forward(d_idx.t, d_w.t, d_scores.t, d_logits.t, with_bias ? d_bias.t : Tensor{}, kind);
        check_equal(download_i32(d_idx.t), want.idx_NK, "topk_idx");
        // Scores and weights are computed in double and rounded to float on both
        // backends; only exp/log and the order of a double sum differ, which can
        // move a result by one float ulp at most: 3e-7 relative covers 2 ulps.
        check_close(download(d_scores.t), want.scores_NE, 3e-7, 1e-30, "scores");
        check_close(download(d_w.t), want.w_NK, 3e-7, 1e-30, "topk_w");
      }
    }
  }
}

TEST_CASE("GPU router_backward matches the CPU and accumulates", "[gpu][router]") {
  struct Shape {
    int64_t N, E, K;
  };
  for (const Shape sh : {Shape{37, 8, 2}, Shape{37, 64, 4}}) {
    for (RouterKind kind : {RouterKind::kSoftmaxTopK, RouterKind::kSigmoidTopK}) {
      const int64_t N = sh.N, E = sh.E, K = sh.K;
      INFO(name_of(kind) << ", N = " << N << ", E = " << E << ", K = " << K);
      const Routed r = cpu_route(random_vector(N * E, 200 + E), nullptr, N, E, K, kind);
      const std::vector<float> dw = random_vector(N * K, 201);
      const std::vector<float> prior = random_vector(N * E, 202);
      std::vector<float> want = prior;
      cpu::router_backward(want.data(), dw.data(), r.idx_NK.data(), r.w_NK.data(), r.scores_NE.data(), N, E, K, kind);

      DeviceTensor d_dlogits = upload(prior, {N, E}, DType::kF32);
      const DeviceTensor d_dw = upload(dw, {N, K}, DType::kF32);
      const DeviceTensor d_idx = upload_i32(r.idx_NK, {N, K});
      const DeviceTensor d_w = upload(r.w_NK, {N, K}, DType::kF32);
      const DeviceTensor d_scores = upload(r.scores_NE, {N, E}, DType::kF32);
      settle();
      ops::router_backward(d_dlogits.t, d_dw.t, d_idx.t, d_w.t, d_scores.t, kind);
      const std::vector<float> got = download(d_dlogits.t);
      // The same double operations in the same order (no fused multiply-adds
      // on either side), one float rounding, one float add: expected bit for
      // bit; 1e-6 relative / 1e-7 absolute is the stated margin.
      check_close(got, want, 1e-6, 1e-7, "dlogits");
      // Unpicked logits are left exactly as they were.
      for (int64_t n = 0; n < N; ++n)
        for (int64_t e = 0; e < E; ++e) {
          const int32_t* idx = r.idx_NK.data() + n * K;
          if (std::find(idx, idx + K, e) == idx + K) CHECK(got[n * E + e] == prior[n * E + e]);
        }
    }
  }
}

// ---- router_aux_losses ------------------------------------------------------

TEST_CASE("GPU router_aux_losses matches the CPU (losses on the device, written gradient)", "[gpu][router][aux]") {
  struct Shape {
    int64_t B, T, E, K;
  };
  const float w_lb = 0.7f, w_z = 0.3f, w_seq = 0.5f, grad_scale = 1.5f;
  for (const Shape sh :
       {Shape{1, 37, 8, 2}, Shape{2, 37, 8, 2}, Shape{4, 300, 64, 4}, Shape{1, 4096, 8, 2}, Shape{3, 16, 2048, 32}}) {
    for (RouterKind kind : {RouterKind::kSoftmaxTopK, RouterKind::kSigmoidTopK}) {
      const int64_t B = sh.B, T = sh.T, E = sh.E, K = sh.K, N = B * T;
      INFO(name_of(kind) << ", B = " << B << ", T = " << T << ", E = " << E << ", K = " << K);
      const std::vector<float> logits = random_vector(N * E, 300 + E + T);
      const Routed r = cpu_route(logits, nullptr, N, E, K, kind);
      std::vector<float> want_daux(N * E);
      const cpu::RouterAux want =
          cpu::router_aux_losses(want_daux.data(), logits.data(), r.scores_NE.data(), r.idx_NK.data(), B, T, E, K, kind,
                                 w_lb, w_z, w_seq, grad_scale);

      const DeviceTensor d_logits = upload(logits, {N, E}, DType::kF32);
      const DeviceTensor d_scores = upload(r.scores_NE, {N, E}, DType::kF32);
      const DeviceTensor d_idx = upload_i32(r.idx_NK, {N, K});
      DeviceTensor d_daux = upload(std::vector<float>(N * E, 7.0f), {N, E}, DType::kF32);  // written, not added
      DeviceTensor d_aux = upload(std::vector<float>(3, 7.0f), {3}, DType::kF32);
      settle();
      ops::router_aux_losses(d_aux.t, d_daux.t, d_logits.t, d_scores.t, d_idx.t, T, kind, w_lb, w_z, w_seq, grad_scale);
      // Double sums of O(N*E) terms of O(1) in another order (~1e-15 relative),
      // each rounded to float once: equal but for a rare one-ulp difference.
      const std::vector<float> got = download(d_aux.t);
      CHECK(got[0] == Approx(static_cast<float>(want.load_balance)).epsilon(1e-6));
      CHECK(got[1] == Approx(static_cast<float>(want.z_loss)).epsilon(1e-6));
      CHECK(got[2] == Approx(static_cast<float>(want.sequence_balance)).epsilon(1e-6));
      // The gradient is formed in double on both sides and rounded to float
      // once: equal but for a rare one-ulp rounding difference.
      const std::vector<float> daux = download(d_daux.t);
      check_close(daux, want_daux, 1e-6, 1e-12, "daux_logits");

      // Without a gradient buffer: the same losses, bit for bit (every sum on
      // the device is in a fixed order), and daux untouched.
      ops::router_aux_losses(d_aux.t, Tensor{}, d_logits.t, d_scores.t, d_idx.t, T, kind, w_lb, w_z, w_seq, grad_scale);
      check_bitwise(download(d_aux.t), got, "aux losses again");
      check_bitwise(download(d_daux.t), daux, "daux_logits after a call without it");
    }
  }
}

// ---- moe_plan -------------------------------------------------------------------

TEST_CASE("GPU moe_plan is identical to the CPU's, with and without capacity drops", "[gpu][dispatch]") {
  struct Case {
    int64_t N, E, K;
    double skew;
    std::vector<int64_t> capacities;
  };
  // N*K < 1024 pairs is one chunk; the larger cases split the pairs over 10 to
  // 12 warps, so the cross-chunk bases and the scratch in row_pair_M are used.
  const std::vector<Case> cases = {
      {37, 8, 2, 0.0, {0, 5, 9, 74, 1000}},  // 74 pairs over 8 experts: 5 drops some, 74 none
      {37, 8, 2, 0.9, {0, 3, 20}},           // expert 0 in ~90% of the tokens
      {1, 8, 2, 0.0, {0, 1}},                // fewer pairs than experts
      {5000, 8, 2, 0.0, {0, 1100, 1250}},    // 10 chunks
      {3000, 64, 4, 0.5, {0, 188, 1}},       // 12 chunks, capacity 1 keeps one pair per expert
      {700, 2048, 32, 0.0, {0, 10}},         // the largest E and K: 22400 pairs, 11 chunks
  };
  for (const Case& c : cases) {
    const std::vector<int32_t> idx = random_choices(c.N, c.E, c.K, 400 + c.N + c.E, c.skew);
    for (int64_t capacity : c.capacities) {
      const std::string what = "N = " + std::to_string(c.N) + ", E = " + std::to_string(c.E) +
                               ", K = " + std::to_string(c.K) + ", skew " + std::to_string(c.skew) + ", capacity " +
                               std::to_string(capacity);
      const HostPlan want = cpu_plan(idx, c.N, c.E, c.K, capacity);
      check_plan(gpu_plan(idx, c.N, c.E, c.K, capacity), want, what);
    }
  }
}

TEST_CASE("GPU moe_count_experts equals the CPU's counts and accumulates", "[gpu][dispatch]") {
  struct Case {
    int64_t N, E, K;
    double skew;
    int64_t capacity;
  };
  // Up to 22400 pairs (many blocks adding to the same experts) and E = 2048.
  for (const Case& c : std::vector<Case>{{37, 8, 2, 0.0, 5}, {5000, 8, 2, 0.9, 0}, {700, 2048, 32, 0.0, 10}}) {
    const std::vector<int32_t> idx = random_choices(c.N, c.E, c.K, 450 + c.N, c.skew);
    const HostPlan want_plan = cpu_plan(idx, c.N, c.E, c.K, c.capacity);
    std::vector<int32_t> routed(c.E, 0), kept(c.E, 0);
    const DeviceTensor d_idx = upload_i32(idx, {c.N, c.K});
    const DeviceTensor d_offsets = upload_i32(want_plan.offsets_E1, {c.E + 1});
    const DeviceTensor d_routed = upload_i32(routed, {c.E}), d_kept = upload_i32(kept, {c.E});
    settle();
    for (int micro = 0; micro < 2; ++micro) {
      cpu::moe_count_experts(routed.data(), kept.data(), idx.data(), c.N * c.K, want_plan.offsets_E1.data(), c.E);
      ops::moe_count_experts(d_routed.t, d_kept.t, d_idx.t, d_offsets.t);
    }
    INFO("N = " << c.N << ", E = " << c.E << ", K = " << c.K);
    check_equal(download_i32(d_routed.t), routed, "routed counts");
    check_equal(download_i32(d_kept.t), kept, "kept counts");
  }
}

TEST_CASE("GPU moe_plan of the router's own choices, and of no tokens", "[gpu][dispatch]") {
  const int64_t N = 37, E = 8, K = 2;
  const Routed r = cpu_route(tied_logits(N, E, 410), nullptr, N, E, K, RouterKind::kSoftmaxTopK);
  for (int64_t capacity : {0, 4}) {
    check_plan(gpu_plan(r.idx_NK, N, E, K, capacity), cpu_plan(r.idx_NK, N, E, K, capacity),
               "routed, capacity " + std::to_string(capacity));
  }
  const DevicePlan empty = gpu_plan({}, 0, E, K, 0);
  CHECK(empty.M == 0);
  check_equal(download_i32(empty.offsets_E1.t), std::vector<int32_t>(E + 1, 0), "offsets_E1 of no tokens");
}

// ---- permute / unpermute ----------------------------------------------------------

namespace {

// Tokens, routing and a plan for the dispatch tests: N = 37, E = 8, K = 2.
struct Dispatch {
  int64_t N = 37, E = 8, K = 2, D;
  std::vector<int32_t> idx_NK;
  std::vector<float> w_NK;
  HostPlan plan;
  DeviceTensor d_pair_row, d_w;

  Dispatch(int64_t D_, int64_t capacity, uint64_t seed) : D(D_) {
    idx_NK = random_choices(N, E, K, seed, 0.5);
    w_NK = random_vector(N * K, seed + 1);
    plan = cpu_plan(idx_NK, N, E, K, capacity);
    d_pair_row = upload_i32(plan.pair_row_NK, {N, K});
    d_w = upload(w_NK, {N, K}, DType::kF32);
  }
  int64_t M() const { return plan.M; }
};

}  // namespace

TEST_CASE("GPU moe_permute copies rows exactly, f32 and bf16, and only the kept ones", "[gpu][dispatch]") {
  // D = 64: rows of 256 / 128 bytes take the 16-byte copy; D = 30 (120 / 60
  // bytes) the element loop; f32 -> bf16 converts on the way.
  for (int64_t D : {64, 30}) {
    for (DType tx : {DType::kF32, DType::kBF16}) {
      for (DType txs : {DType::kF32, DType::kBF16}) {
        INFO("D = " << D << ", x " << name_of(tx) << ", xs " << name_of(txs));
        Dispatch s(D, 5, 500 + D);
        REQUIRE(s.plan.dropped > 0);
        const std::vector<float> x = random_vector(s.N * D, 501);
        // A buffer of a row per pair, as the MoE layer keeps: rows past M stay 7.
        std::vector<float> want(s.N * s.K * D, 7.0f);
        cpu::moe_permute(want.data(), as_uploaded(x, tx).data(), s.plan.pair_row_NK.data(), s.N, D, s.K);
        const DeviceTensor d_x = upload(x, {s.N, D}, tx);
        DeviceTensor d_xs = upload(std::vector<float>(s.N * s.K * D, 7.0f), {s.N * s.K, D}, txs);
        settle();
        ops::moe_permute(d_xs.t, d_x.t, s.d_pair_row.t);
        check_bitwise(download(d_xs.t), as_uploaded(want, txs), "xs (a copy: exact; untouched past M)");
      }
    }
  }
}

TEST_CASE("GPU gather_rows copies the indexed rows exactly, in every word size", "[gpu][dispatch]") {
  // f32 D = 64 (16-byte words), bf16 D = 30 (4-byte words), bf16 D = 31 (2-byte words).
  for (const auto& [D, t] :
       std::vector<std::pair<int64_t, DType>>{{64, DType::kF32}, {30, DType::kBF16}, {31, DType::kBF16}}) {
    INFO("D = " << D << ", " << name_of(t));
    const int64_t rows = 50, R = 40;
    std::vector<int32_t> index(R);
    for (int64_t i = 0; i < R; ++i) index[i] = static_cast<int32_t>((i * 7 + 3) % rows);
    const std::vector<float> src = as_uploaded(random_vector(rows * D, 700 + D), t);
    std::vector<float> want(R * D);
    for (int64_t i = 0; i < R; ++i) {
      std::copy(src.begin() + index[i] * D, src.begin() + (index[i] + 1) * D, want.begin() + i * D);
    }
    const DeviceTensor d_src = upload(src, {rows, D}, t), d_index = upload_i32(index, {R});
    DeviceTensor d_dst = device_tensor({R, D}, t);
    settle();
    ops::gather_rows(d_dst.t, d_src.t, d_index.t);
    check_bitwise(download(d_dst.t), want, "gathered rows");
  }
}

TEST_CASE("GPU permute then unpermute with unit weights is the identity", "[gpu][dispatch]") {
  // K = 1, w = 1: out = 0 + 1 * x. K = 2, w = 0.5 each: out = 0.5 x + 0.5 x.
  // Both are exact in fp32 and, from bf16 inputs, in bf16 again.
  for (int64_t K : {1, 2}) {
    for (int64_t D : {64, 30}) {
      for (DType t : {DType::kF32, DType::kBF16}) {
        const int64_t N = 37, E = 8;
        INFO("K = " << K << ", D = " << D << ", " << name_of(t));
        const std::vector<int32_t> idx = random_choices(N, E, K, 600 + K + D);
        const DevicePlan p = gpu_plan(idx, N, E, K, 0);
        REQUIRE(p.M == N * K);
        const std::vector<float> x = as_uploaded(random_vector(N * D, 601), t);
        const DeviceTensor d_x = upload(x, {N, D}, t);
        const DeviceTensor d_w = upload(std::vector<float>(N * K, K == 1 ? 1.0f : 0.5f), {N, K}, DType::kF32);
        DeviceTensor d_xs = device_tensor({N * K, D}, t);
        DeviceTensor d_out = device_tensor({N, D}, t);  // zeros
        settle();
        const Tensor xs = d_xs.t;
        ops::moe_permute(xs, d_x.t, p.pair_row_NK.t);
        const std::vector<float> moved = download(xs);
        CHECK(std::vector<float>(moved.begin(), moved.begin() + N * D) != x);  // the rows really moved
        ops::moe_unpermute(d_out.t, xs, d_w.t, p.pair_row_NK.t);
        check_bitwise(download(d_out.t), x, "unpermute(permute(x))");
      }
    }
  }
}

TEST_CASE("GPU moe_unpermute accumulates as the CPU does, dropped pairs adding nothing", "[gpu][dispatch]") {
  for (int64_t capacity : {0, 5}) {
    for (DType tout : {DType::kF32, DType::kBF16}) {
      for (DType tys : {DType::kF32, DType::kBF16}) {
        const int64_t D = 30;
        INFO("capacity " << capacity << ", out " << name_of(tout) << ", ys " << name_of(tys));
        Dispatch s(D, capacity, 700 + capacity);
        const std::vector<float> ys = as_uploaded(random_vector(s.M() * D, 701), tys);
        const std::vector<float> prior = as_uploaded(random_vector(s.N * D, 702), tout);
        std::vector<float> want = prior;
        cpu::moe_unpermute(want.data(), ys.data(), s.w_NK.data(), s.plan.pair_row_NK.data(), s.N, D, s.K);
        const DeviceTensor d_ys = upload(ys, {s.M(), D}, tys);
        DeviceTensor d_out = upload(prior, {s.N, D}, tout);
        settle();
        ops::moe_unpermute(d_out.t, d_ys.t, s.d_w.t, s.d_pair_row.t);
        // f32 out: the CPU's operations in its order, products and sums rounded
        // one at a time (no FMA): expected bit for bit, margin 1e-6. bf16 out:
        // the same fp32 sum, rounded once to bf16.
        check_close(download(d_out.t), want, tout == DType::kBF16 ? kBf16Rtol : 1e-6, 1e-6, "out");
      }
    }
  }
}

TEST_CASE("GPU moe_permute_backward gathers per token and accumulates", "[gpu][dispatch]") {
  for (int64_t capacity : {0, 5}) {
    for (DType tdx : {DType::kF32, DType::kBF16}) {
      for (DType tdxs : {DType::kF32, DType::kBF16}) {
        const int64_t D = 64;
        INFO("capacity " << capacity << ", dx " << name_of(tdx) << ", dxs " << name_of(tdxs));
        Dispatch s(D, capacity, 800 + capacity);
        const std::vector<float> dxs = as_uploaded(random_vector(s.M() * D, 801), tdxs);
        const std::vector<float> prior = as_uploaded(random_vector(s.N * D, 802), tdx);
        std::vector<float> want = prior;
        cpu::moe_permute_backward(want.data(), dxs.data(), s.plan.pair_row_NK.data(), s.N, D, s.K);
        const DeviceTensor d_dxs = upload(dxs, {s.M(), D}, tdxs);
        DeviceTensor d_dx = upload(prior, {s.N, D}, tdx);
        settle();
        ops::moe_permute_backward(d_dx.t, d_dxs.t, s.d_pair_row.t);
        // f32 dx: the rows of a token are added in ascending row order, as the
        // CPU adds them: expected bit for bit, margin 1e-6.
        // bf16 dx: that fp32 sum rounded once.
        check_close(download(d_dx.t), want, tdx == DType::kBF16 ? kBf16Rtol : 1e-6, 1e-6, "dx");
      }
    }
  }
}

TEST_CASE("GPU moe_unpermute_backward writes dys and dtopk_w, 0 for dropped pairs", "[gpu][dispatch]") {
  for (int64_t capacity : {0, 5}) {
    for (DType t : {DType::kF32, DType::kBF16}) {
      const int64_t D = 64;
      INFO("capacity " << capacity << ", activations " << name_of(t));
      Dispatch s(D, capacity, 900 + capacity);
      const std::vector<float> ys = as_uploaded(random_vector(s.M() * D, 901), t);
      const std::vector<float> dout = as_uploaded(random_vector(s.N * D, 902), t);
      std::vector<float> want_dys(s.M() * D, 7.0f), want_dw(s.N * s.K, 7.0f);
      cpu::moe_unpermute_backward(want_dys.data(), want_dw.data(), dout.data(), ys.data(), s.w_NK.data(),
                                  s.plan.pair_row_NK.data(), s.N, D, s.K);
      const DeviceTensor d_ys = upload(ys, {s.M(), D}, t);
      const DeviceTensor d_dout = upload(dout, {s.N, D}, t);
      DeviceTensor d_dys = upload(std::vector<float>(s.M() * D, 7.0f), {s.M(), D}, t);  // written, not added
      DeviceTensor d_dw = upload(std::vector<float>(s.N * s.K, 7.0f), {s.N, s.K}, DType::kF32);
      settle();
      ops::moe_unpermute_backward(d_dys.t, d_dw.t, d_dout.t, d_ys.t, s.d_w.t, s.d_pair_row.t);
      // dys = w * dout, one fp32 product (bit for bit in f32; one bf16 rounding in bf16).
      check_close(download(d_dys.t), want_dys, t == DType::kBF16 ? kBf16Rtol : 1e-6, 1e-7, "dys");
      // dtopk_w: a 64-term dot product summed in fp32 (GPU, a tree) against
      // double (CPU); terms are O(1) (bf16 inputs multiply exactly in fp32),
      // so the difference is ~1e-6: margin 1e-5 relative + 1e-4 absolute.
      const std::vector<float> dw = download(d_dw.t);
      check_close(dw, want_dw, 1e-5, 1e-4, "dtopk_w");
      for (int64_t i = 0; i < s.N * s.K; ++i)
        if (s.plan.pair_row_NK[i] < 0) CHECK(dw[i] == 0.0f);
      if (capacity > 0) CHECK(s.plan.dropped > 0);
    }
  }
}
