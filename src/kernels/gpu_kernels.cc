#include "src/kernels/gpu_kernels.h"

#include <spdlog/spdlog.h>

#include <map>
#include <mutex>
#include <stdexcept>
#include <tuple>

#if MOE_TRAIN_HAS_CUDA
#include <cuda_runtime.h>
#endif

#include "src/core/cuda_device.h"
#include "src/kernels/cuda/cudnn_attention.h"
#include "src/kernels/cuda/cutlass_grouped_gemm.h"

namespace moe::kernels {
namespace {

int current_device() {
#if MOE_TRAIN_HAS_CUDA
  int device = 0;
  if (cudaGetDevice(&device) == cudaSuccess) return device;
#endif
  return 0;
}

VendorFacts facts_of(int device) {
  VendorFacts facts;
  facts.cudnn_in_build = cuda::cudnn_attention::in_build();
  facts.cudnn_version = facts.cudnn_in_build ? cuda::cudnn_attention::loaded_version() : 0;
  facts.cutlass_in_build = cuda::cutlass_grouped::in_build();
  facts.compute_capability = cuda_compute_capability(device);
  return facts;
}

// The decisions of one op family. A decision holds for one device, problem
// and set of settings: a setting or a failed check that changes later makes
// a new one.
template <class Problem>
class Decisions {
 public:
  using Key = std::tuple<int, Problem, KernelSource, bool, std::string>;

  // decide(problem, device, settings, disabled) -> Choice, run once per key, outside the lock.
  template <class Decide>
  const Choice& get(const std::string& family, const Problem& p, Decide&& decide) {
    const KernelSettings s = settings();
    const int device = current_device();
    const std::string disabled = vendor_disabled(family);
    const Key key{device, p, s.source, s.deterministic, disabled};
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto it = made_.find(key);
      if (it != made_.end()) return it->second;
    }
    Choice choice = decide(p, device, s, disabled);
    std::lock_guard<std::mutex> lock(mutex_);
    const auto [it, inserted] = made_.emplace(key, std::move(choice));
    if (inserted) {
      lines_.push_back(family + " " + p.text() + ": " + it->second.implementation +
                       (it->second.reason.empty() ? "" : " (" + it->second.reason + ")"));
    }
    return it->second;
  }

  std::vector<std::string> lines() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return lines_;
  }

 private:
  mutable std::mutex mutex_;
  std::map<Key, Choice> made_;
  std::vector<std::string> lines_;
};

Decisions<AttentionProblem>& attention_decisions() {
  static Decisions<AttentionProblem> d;
  return d;
}
Decisions<ExpertGemmProblem>& expert_gemm_decisions() {
  static Decisions<ExpertGemmProblem> d;
  return d;
}

}  // namespace

bool fp8_gemms_available() { return cuda_compute_capability(current_device()) >= 89; }

const Choice& attention_choice(const AttentionProblem& p) {
  return attention_decisions().get(
      kAttentionFamily, p,
      [](const AttentionProblem& p, int device, const KernelSettings& s, const std::string& disabled) {
        Choice choice = choose_attention(p, facts_of(device), s, disabled);
        if (!choice.vendor) return choice;
        try {  // cuDNN's own support check: it builds the shape's plans
          const int64_t workspace = cuda::cudnn_attention::prepare(p, s.deterministic);
          spdlog::debug("cuDNN attention plans for {}: {} MiB of workspace", p.text(), workspace >> 20);
        } catch (const cuda::cudnn_attention::Refused& e) {
          choice = Choice{false, kBuiltinAttention, std::string("cuDNN refused the shape: ") + e.what()};
          spdlog::warn("attention {}: {}; the builtin kernel runs", p.text(), choice.reason);
        }
        return choice;
      });
}

const Choice& expert_gemm_choice(const ExpertGemmProblem& p) {
  return expert_gemm_decisions().get(
      kExpertGemmFamily, p,
      [](const ExpertGemmProblem& p, int device, const KernelSettings& s, const std::string& disabled) {
        Choice choice = choose_expert_gemm(p, facts_of(device), s, disabled);
        if (!choice.vendor) return choice;
        try {  // CUTLASS's can_implement, and the kernels' arguments, built once
          cuda::cutlass_grouped::prepare(p.E, p.I, p.O);
        } catch (const std::exception& e) {
          choice = Choice{false, kBuiltinExpertGemm, std::string("CUTLASS cannot run it: ") + e.what()};
          spdlog::warn("expert GEMMs {}: {}; the builtin kernel runs", p.text(), choice.reason);
        }
        return choice;
      });
}

std::vector<std::string> gpu_kernel_lines() {
  std::vector<std::string> out = {"dense GEMMs: cuBLASLt"};
  for (const std::string& line : expert_gemm_decisions().lines()) out.push_back(line);
  for (const std::string& line : attention_decisions().lines()) out.push_back(line);
  out.push_back("other ops: builtin");
  return out;
}

}  // namespace moe::kernels
