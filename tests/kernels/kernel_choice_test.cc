// The rules that pick a GPU kernel per op family: cuDNN's fused attention or
// the project's own, with the reason; and the workspace cuDNN's attention
// backward asks for, which --dry-run counts. No GPU needed: the rules are
// functions of the problem and the device's facts.
#include "src/kernels/kernel_choice.h"

#include <catch2/catch.hpp>

using Catch::Matchers::Contains;
using moe::DType;
using namespace moe::kernels;

namespace {

AttentionProblem bench_shape() {  // bench_1b_moe.toml: 8 x 2048 tokens, 16 heads over 8 KV heads of 128
  return AttentionProblem{8, 2048, 16, 8, 128, DType::kBF16};
}

VendorFacts h100() {
  VendorFacts f;
  f.compute_capability = 90;
  f.cudnn_version = 91900;
  f.cudnn_in_build = true;
  return f;
}

}  // namespace

TEST_CASE("train.kernels parses auto and builtin, and names the key otherwise") {
  CHECK(parse_kernel_source("auto") == KernelSource::kAuto);
  CHECK(parse_kernel_source("builtin") == KernelSource::kBuiltin);
  CHECK_THROWS_WITH(parse_kernel_source("cudnn"), Contains("train.kernels") && Contains("builtin"));
}

TEST_CASE("attention runs cuDNN's fused SDPA on an H100 in bf16, named with the loaded version") {
  const Choice c = choose_attention(bench_shape(), h100(), KernelSettings{});
  CHECK(c.vendor);
  CHECK(c.implementation == "cuDNN 9.19.0 fused SDPA");
  CHECK(c.reason.empty());
  // A100 too, and any head dim cuDNN runs: multiples of 8 up to 128.
  VendorFacts a100 = h100();
  a100.compute_capability = 80;
  for (int64_t dh : {8, 64, 72, 128}) {
    AttentionProblem p = bench_shape();
    p.Dh = dh;
    CHECK(choose_attention(p, a100, KernelSettings{}).vendor);
  }
}

TEST_CASE("attention falls back to the builtin kernel, and says why, wherever cuDNN's does not apply") {
  const KernelSettings defaults;
  struct Case {
    const char* what;
    AttentionProblem p;
    VendorFacts facts;
    KernelSettings settings;
    const char* reason;  // a part of the reason
  };
  AttentionProblem f32 = bench_shape(), dh20 = bench_shape(), dh160 = bench_shape(), empty = bench_shape();
  f32.dtype = DType::kF32;
  dh20.Dh = 20;
  dh160.Dh = 160;
  empty.B = 0;
  VendorFacts emulator = h100(), no_library = h100(), old = h100(), turing = h100(), blackwell = h100();
  emulator.cudnn_in_build = false;
  no_library.cudnn_version = 0;
  old.cudnn_version = 8907;
  turing.compute_capability = 75;
  blackwell.compute_capability = 100;
  const KernelSettings builtin{KernelSource::kBuiltin, true};
  const std::vector<Case> cases = {
      {"train.kernels = builtin", bench_shape(), h100(), builtin, "train.kernels = \"builtin\""},
      {"a build without the path", bench_shape(), emulator, defaults, "no cuDNN path"},
      {"no libcudnn", bench_shape(), no_library, defaults, "libcudnn.so.9"},
      {"cuDNN 8", bench_shape(), old, defaults, "8.9.7 is older than 9.0"},
      {"sm_75", bench_shape(), turing, defaults, "sm_75"},
      {"fp32 activations", f32, h100(), defaults, "fp32"},
      {"head dim 20", dh20, h100(), defaults, "head dim 20"},
      {"head dim 160", dh160, h100(), defaults, "head dim 160"},
      {"no tokens", empty, h100(), defaults, "no tokens"},
      {"deterministic on sm_100", bench_shape(), blackwell, defaults, "train.deterministic = false"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    const Choice choice = choose_attention(c.p, c.facts, c.settings);
    CHECK_FALSE(choice.vendor);
    CHECK(choice.implementation == kBuiltinAttention);
    CHECK_THAT(choice.reason, Contains(c.reason));
  }
  // sm_100 has cuDNN's non-deterministic backward.
  CHECK(choose_attention(bench_shape(), blackwell, KernelSettings{KernelSource::kAuto, false}).vendor);
}

TEST_CASE("a vendor path that failed the GPU check stays off, with the failure as the reason") {
  const Choice c = choose_attention(bench_shape(), h100(), KernelSettings{}, "dq[3] = 0.5, the CPU gives 0.25");
  CHECK_FALSE(c.vendor);
  CHECK_THAT(c.reason, Contains("failed the GPU check") && Contains("dq[3] = 0.5"));

  CHECK(vendor_disabled("attention").empty());
  disable_vendor("attention", "out[0] differs");
  CHECK(vendor_disabled("attention") == "out[0] differs");
  CHECK(vendor_disabled("matmul").empty());
}

TEST_CASE("the expert GEMMs run CUTLASS's grouped GEMM on sm_90 and sm_8x in bf16, and the builtin one elsewhere") {
  VendorFacts hopper = h100();
  hopper.cutlass_in_build = true;
  const ExpertGemmProblem bench{8, 2048, 640, DType::kBF16};  // bench_1b_moe.toml's w1 and w3; w2 is 640 -> 2048
  const Choice c = choose_expert_gemm(bench, hopper, KernelSettings{});
  CHECK(c.vendor);
  CHECK(c.implementation == kCutlassExpertGemmSm90);
  // Deterministic either way: no reason to fall back when train.deterministic is on or off.
  CHECK(choose_expert_gemm(bench, hopper, KernelSettings{KernelSource::kAuto, false}).vendor);

  struct Case {
    const char* what;
    ExpertGemmProblem p;
    VendorFacts facts;
    KernelSettings settings;
    const char* reason;
  };
  // Ampere and Ada run the sm_80 kernels (sm_80 code runs on every sm_8x).
  for (const int cc : {80, 86, 89}) {
    VendorFacts ampere = hopper;
    ampere.compute_capability = cc;
    INFO("sm_" << cc);
    const Choice a = choose_expert_gemm(bench, ampere, KernelSettings{});
    CHECK(a.vendor);
    CHECK(a.implementation == kCutlassExpertGemmSm80);
  }

  VendorFacts emulator = hopper, volta = hopper, blackwell = hopper;
  emulator.cutlass_in_build = false;
  volta.compute_capability = 70;
  blackwell.compute_capability = 100;
  const std::vector<Case> cases = {
      {"train.kernels = builtin", bench, hopper, KernelSettings{KernelSource::kBuiltin, true}, "train.kernels"},
      {"a build without CUTLASS", bench, emulator, KernelSettings{}, "no CUTLASS kernels"},
      {"a V100", bench, volta, KernelSettings{}, "sm_70: the CUTLASS kernels are built for sm_80 (sm_8x) and sm_90a"},
      {"sm_100", bench, blackwell, KernelSettings{}, "sm_100"},
      {"fp32 activations", ExpertGemmProblem{8, 2048, 640, DType::kF32}, hopper, KernelSettings{}, "fp32"},
      {"rows of 100 values", ExpertGemmProblem{8, 2048, 100, DType::kBF16}, hopper, KernelSettings{}, "O=100"},
  };
  for (const Case& k : cases) {
    INFO(k.what);
    const Choice choice = choose_expert_gemm(k.p, k.facts, k.settings);
    CHECK_FALSE(choice.vendor);
    CHECK(choice.implementation == kBuiltinExpertGemm);
    CHECK_THAT(choice.reason, Contains(k.reason));
  }
  CHECK_THAT(choose_expert_gemm(bench, hopper, KernelSettings{}, "out[7] = nan").reason,
             Contains("failed the GPU check: out[7] = nan"));
}

TEST_CASE("ops map to the family whose vendor kernel runs them") {
  CHECK(vendor_family("attention_forward") == "attention");
  CHECK(vendor_family("attention_backward") == "attention");
  CHECK(vendor_family("rmsnorm_forward").empty());
  CHECK(vendor_family("grouped_matmul_forward") == "expert GEMMs");
  CHECK(vendor_family("grouped_matmul_backward") == "expert GEMMs");
  CHECK(vendor_family("matmul_forward").empty());
}

TEST_CASE("cuDNN's attention workspace is sized as its frontend sizes it") {
  const AttentionProblem p = bench_shape();
  const int64_t sums = 8 * 16 * 2048 * 4;  // fp32 softmax sums, B x H x T
  // Deterministic: the bf16 dP buffer, B x H x T x T (T a multiple of 64 here): 1 GiB at the bench shape.
  CHECK(cudnn_attention_workspace_bytes(p, true) == int64_t{8} * 16 * 2048 * 2048 * 2 + sums);
  // Otherwise: an fp32 dQ accumulator, B x H x T x Dh.
  CHECK(cudnn_attention_workspace_bytes(p, false) == int64_t{8} * 16 * 2048 * 128 * 4 + sums);
  // T is padded to 64 in the dP buffer.
  AttentionProblem odd = p;
  odd.T = 100;
  CHECK(cudnn_attention_workspace_bytes(odd, true) == int64_t{8} * 16 * 128 * 128 * 2 + 8 * 16 * 100 * 4);
}
