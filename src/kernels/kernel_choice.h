// Which implementation runs an op family on the GPU: the project's own
// kernels ("builtin": the reference of the GPU path, and the sm_80, fp32 and
// emulator path) or a vendor library's kernel tuned for the hardware (cuDNN's
// fused attention). The rules are plain functions of the problem and the
// facts of the device, so that they are tested without a GPU; the process
// keeps the settings of the run (train.kernels, train.deterministic) and the
// families whose vendor path failed the on-device check (check-gpu), which
// then run builtin everywhere in this process.
#pragma once

#include <cstdint>
#include <string>

#include "src/config/enums.h"
#include "src/core/tensor.h"

namespace moe::kernels {

// train.kernels: its enum is the config's (src/config/enums.h), which parses
// the key. This reads a name from elsewhere; an unknown one is a
// std::invalid_argument naming the key and the names it takes.
using moe::KernelSource;
KernelSource parse_kernel_source(const std::string& name);

struct KernelSettings {
  KernelSource source = KernelSource::kAuto;
  // Vendor kernels must be bitwise deterministic (cuDNN's deterministic
  // attention backward): bit-exact resume and graph replay rely on it. The
  // builtin kernels always are.
  bool deterministic = true;
};

// The process's settings, from the config when the run starts.
void configure(const KernelSettings& settings);
const KernelSettings& settings();

// Causal self-attention with grouped KV heads at one shape (ops.h's legend).
struct AttentionProblem {
  int64_t B = 0, T = 0, H = 0, G = 0, Dh = 0;
  DType dtype = DType::kF32;
  bool operator<(const AttentionProblem& o) const;
  std::string text() const;  // "B=8 T=2048 H=16/8 Dh=128 bf16"
};

// The expert GEMMs of one expert weight [E, I, O] (grouped_matmul in ops.h).
struct ExpertGemmProblem {
  int64_t E = 0, I = 0, O = 0;
  DType dtype = DType::kF32;
  bool operator<(const ExpertGemmProblem& o) const;
  std::string text() const;  // "E=8 I=2048 O=640 bf16"
};

// What the device and this build offer the vendor paths.
struct VendorFacts {
  int compute_capability = 0;     // 90 for sm_90; 0: no GPU
  int64_t cudnn_version = 0;      // cuDNN's number (91900 for 9.19.0); 0: none loaded
  bool cudnn_in_build = false;    // false in CPU-only and emulator builds
  bool cutlass_in_build = false;  // the CUTLASS kernels (sm_80, sm_90a); false in CPU-only and emulator builds
};

struct Choice {
  bool vendor = false;
  std::string implementation;  // "cuDNN 9.19.0 fused SDPA" or "builtin flash attention (WMMA)"
  std::string reason;          // why the builtin kernel runs; empty when the vendor's does
};

// "9.19.0" for 91900 (and "8.9.7" for cuDNN 8's 8907).
std::string cudnn_version_text(int64_t version);

// The kernels' names, as the start-up log and docs/gpu.md say them.
extern const char* const kBuiltinAttention;
extern const char* const kBuiltinExpertGemm;
extern const char* const kCutlassExpertGemmSm80;
extern const char* const kCutlassExpertGemmSm90;

// The rules for attention: cuDNN's fused SDPA where it is in the build and
// loaded (9.0 or newer), the GPU is sm_80 or newer, the activations are bf16,
// Dh is a multiple of 8 up to 128, and (with `deterministic`) the GPU is not
// sm_100, where cuDNN has no deterministic backward; `disabled` (the reason a
// check failed, or empty) turns it off. cuDNN may still refuse the shape when
// its plan is built: the caller then runs builtin with cuDNN's reason.
Choice choose_attention(const AttentionProblem& p, const VendorFacts& facts, const KernelSettings& settings,
                        const std::string& disabled = "");

// The rules for the expert GEMMs: CUTLASS's grouped GEMM where its kernels
// are in the build, the GPU is sm_90 (H100, H200: the sm_90a kernels, which
// run on no other) or sm_8x (A100, A10, L4, RTX 30/40: the sm_80 kernels),
// the activations are bf16, and I and O are multiples of 8 (16-byte rows).
// Deterministic: every output tile is summed by one CTA in a fixed order.
Choice choose_expert_gemm(const ExpertGemmProblem& p, const VendorFacts& facts, const KernelSettings& settings,
                          const std::string& disabled = "");

// Bytes of device workspace cuDNN's SDPA backward needs beyond its tensors,
// as cuDNN's frontend sizes it: with the deterministic backward, the dP
// buffer of B x H x T64 x T64 bf16 (T64: T rounded up to 64); otherwise an
// fp32 dQ accumulator of B x H x T x Dh. Both add the softmax sums, B x H x T
// fp32. `--dry-run` counts it; the plan's own figure replaces it on a GPU.
int64_t cudnn_attention_workspace_bytes(const AttentionProblem& p, bool deterministic);

// Op families whose vendor kernel failed the on-device check: they run
// builtin in this process from now on. `why` says what failed.
void disable_vendor(const std::string& family, const std::string& why);
// Why `family`'s vendor kernel is off, or "" when it is not.
std::string vendor_disabled(const std::string& family);
// The op families that have a vendor kernel, by the names the log, check-gpu
// and its cache use for them.
inline constexpr const char* kAttentionFamily = "attention";
inline constexpr const char* kExpertGemmFamily = "expert GEMMs";
inline constexpr const char* kVendorFamilies[] = {kAttentionFamily, kExpertGemmFamily};

// The family of an op of ops.h (kAttentionFamily for attention_forward and
// attention_backward, kExpertGemmFamily for grouped_matmul_forward and
// grouped_matmul_backward), or "" for ops with only a builtin kernel.
std::string vendor_family(const std::string& op);

}  // namespace moe::kernels
