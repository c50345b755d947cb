#include "src/kernels/kernel_choice.h"

#include <map>
#include <mutex>
#include <stdexcept>
#include <tuple>

namespace moe::kernels {
namespace {

std::mutex registry_mutex;
KernelSettings process_settings;
std::map<std::string, std::string>& disabled_families() {
  static std::map<std::string, std::string> families;
  return families;
}

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

}  // namespace

const char* const kBuiltinAttention = "builtin flash attention (WMMA)";
const char* const kBuiltinExpertGemm = "builtin grouped GEMM (WMMA)";
const char* const kCutlassExpertGemmSm80 = "CUTLASS 4.2 grouped GEMM (sm_80: cp.async, mma.sync)";
const char* const kCutlassExpertGemmSm90 = "CUTLASS 4.2 grouped GEMM (sm_90a: TMA, wgmma)";

KernelSource parse_kernel_source(const std::string& name) {
  if (const auto source = moe::Choice<KernelSource>::find(name)) return *source;
  throw std::invalid_argument("train.kernels = \"" + name + "\": must be one of " +
                              moe::Choice<KernelSource>::names_text());
}

void configure(const KernelSettings& settings) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  process_settings = settings;
}

const KernelSettings& settings() { return process_settings; }

bool AttentionProblem::operator<(const AttentionProblem& o) const {
  return std::tie(B, T, H, G, Dh, dtype) < std::tie(o.B, o.T, o.H, o.G, o.Dh, o.dtype);
}

std::string AttentionProblem::text() const {
  return "B=" + std::to_string(B) + " T=" + std::to_string(T) + " H=" + std::to_string(H) + "/" + std::to_string(G) +
         " Dh=" + std::to_string(Dh) + " " + dtype_name(dtype);
}

bool ExpertGemmProblem::operator<(const ExpertGemmProblem& o) const {
  return std::tie(E, I, O, dtype) < std::tie(o.E, o.I, o.O, o.dtype);
}

std::string ExpertGemmProblem::text() const {
  return "E=" + std::to_string(E) + " I=" + std::to_string(I) + " O=" + std::to_string(O) + " " + dtype_name(dtype);
}

std::string cudnn_version_text(int64_t version) {
  // cuDNN 9 numbers its versions major * 10000 + minor * 100 + patch; cuDNN 8
  // used major * 1000 + minor * 100 + patch.
  const int64_t major = version >= 90000 ? version / 10000 : version / 1000;
  const int64_t minor = version >= 90000 ? version / 100 % 100 : version / 100 % 10;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(version % 100);
}

Choice choose_attention(const AttentionProblem& p, const VendorFacts& facts, const KernelSettings& settings,
                        const std::string& disabled) {
  const auto builtin = [](std::string reason) { return Choice{false, kBuiltinAttention, std::move(reason)}; };
  if (settings.source == KernelSource::kBuiltin) return builtin("train.kernels = \"builtin\"");
  if (!facts.cudnn_in_build)
    return builtin("this build has no cuDNN path (a CPU-only or emulator build, or a toolkit without cudnn.h)");
  if (facts.cudnn_version == 0) return builtin("libcudnn.so.9 was not found (set CUDNN_HOME or LD_LIBRARY_PATH)");
  if (facts.cudnn_version < 90000) {
    return builtin("cuDNN " + cudnn_version_text(facts.cudnn_version) + " is older than 9.0");
  }
  if (facts.compute_capability < 80) {
    return builtin("sm_" + std::to_string(facts.compute_capability) + ": cuDNN's fused attention needs sm_80 or newer");
  }
  if (p.B * p.T == 0) return builtin("no tokens");
  if (p.dtype != DType::kBF16) return builtin("fp32 activations: cuDNN's fused attention is for bf16");
  if (p.Dh % 8 != 0 || p.Dh > 128) {
    return builtin("head dim " + std::to_string(p.Dh) + ": cuDNN's fused attention runs multiples of 8 up to 128");
  }
  if (settings.deterministic && facts.compute_capability / 10 == 10) {
    return builtin(
        "sm_10x has no deterministic cuDNN attention backward (train.deterministic = false allows the "
        "non-deterministic one)");
  }
  if (!disabled.empty()) return builtin("cuDNN's attention failed the GPU check: " + disabled);
  return Choice{true, "cuDNN " + cudnn_version_text(facts.cudnn_version) + " fused SDPA", ""};
}

Choice choose_expert_gemm(const ExpertGemmProblem& p, const VendorFacts& facts, const KernelSettings& settings,
                          const std::string& disabled) {
  const auto builtin = [](std::string reason) { return Choice{false, kBuiltinExpertGemm, std::move(reason)}; };
  if (settings.source == KernelSource::kBuiltin) return builtin("train.kernels = \"builtin\"");
  if (!facts.cutlass_in_build) return builtin("this build has no CUTLASS kernels (a CPU-only or emulator build)");
  const bool hopper = facts.compute_capability == 90, ampere_or_ada = facts.compute_capability / 10 == 8;
  if (!hopper && !ampere_or_ada) {
    return builtin("sm_" + std::to_string(facts.compute_capability) +
                   ": the CUTLASS kernels are built for sm_80 (sm_8x) and sm_90a (H100, H200)");
  }
  if (p.dtype != DType::kBF16) return builtin("fp32 activations: the CUTLASS kernels are for bf16");
  if (p.I % 8 != 0 || p.O % 8 != 0) {
    return builtin("I=" + std::to_string(p.I) + " O=" + std::to_string(p.O) +
                   ": the CUTLASS kernels need multiples of 8 (16-byte rows)");
  }
  if (!disabled.empty()) return builtin("the CUTLASS grouped GEMM failed the GPU check: " + disabled);
  return Choice{true, hopper ? kCutlassExpertGemmSm90 : kCutlassExpertGemmSm80, ""};
}

int64_t cudnn_attention_workspace_bytes(const AttentionProblem& p, bool deterministic) {
  const int64_t softmax_sums = p.B * p.H * p.T * 4;
  if (deterministic) return p.B * p.H * round_up(p.T, 64) * round_up(p.T, 64) * 2 + softmax_sums;
  return p.B * p.H * p.T * p.Dh * 4 + softmax_sums;
}

void disable_vendor(const std::string& family, const std::string& why) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  disabled_families()[family] = why.empty() ? "failed" : why;
}

std::string vendor_disabled(const std::string& family) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  const auto it = disabled_families().find(family);
  return it == disabled_families().end() ? "" : it->second;
}

std::string vendor_family(const std::string& op) {
  if (op == "attention_forward" || op == "attention_backward") return kAttentionFamily;
  if (op == "grouped_matmul_forward" || op == "grouped_matmul_backward") return kExpertGemmFamily;
  return "";
}

}  // namespace moe::kernels
