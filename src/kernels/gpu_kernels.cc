#include "src/kernels/gpu_kernels.h"

#include <spdlog/spdlog.h>

#include <map>
#include <mutex>
#include <tuple>

#if MOE_TRAIN_HAS_CUDA
#include <cuda_runtime.h>
#endif

#include "src/core/cuda_device.h"
#include "src/kernels/cuda/cudnn_attention.h"

namespace moe::kernels {
namespace {

int current_device() {
#if MOE_TRAIN_HAS_CUDA
  int device = 0;
  if (cudaGetDevice(&device) == cudaSuccess) return device;
#endif
  return 0;
}

// A decision holds for one device, shape and set of settings: a setting or a
// failed check that changes later makes a new one.
using Key = std::tuple<int, AttentionProblem, KernelSource, bool, std::string>;

std::mutex mutex;
std::map<Key, Choice>& decisions() {
  static std::map<Key, Choice> made;
  return made;
}
std::vector<std::string>& lines() {
  static std::vector<std::string> made;
  return made;
}

Choice decide(const AttentionProblem& p, int device, const KernelSettings& s, const std::string& disabled) {
  VendorFacts facts;
  facts.cudnn_in_build = cuda::cudnn_attention::in_build();
  facts.cudnn_version = facts.cudnn_in_build ? cuda::cudnn_attention::loaded_version() : 0;
  facts.compute_capability = cuda_compute_capability(device);
  Choice choice = choose_attention(p, facts, s, disabled);
  if (!choice.vendor) return choice;
  try {
    const int64_t workspace = cuda::cudnn_attention::prepare(p, s.deterministic);
    spdlog::debug("cuDNN attention plans for {}: {} MiB of workspace", p.text(), workspace >> 20);
  } catch (const cuda::cudnn_attention::Refused& e) {
    choice = Choice{false, kBuiltinAttention, std::string("cuDNN refused the shape: ") + e.what()};
    spdlog::warn("attention {}: {}; the builtin kernel runs", p.text(), choice.reason);
  }
  return choice;
}

}  // namespace

const Choice& attention_choice(const AttentionProblem& p) {
  const KernelSettings s = settings();
  const int device = current_device();
  const std::string disabled = vendor_disabled("attention");
  const Key key{device, p, s.source, s.deterministic, disabled};
  {
    std::lock_guard<std::mutex> lock(mutex);
    const auto it = decisions().find(key);
    if (it != decisions().end()) return it->second;
  }
  Choice choice = decide(p, device, s, disabled);  // may build cuDNN plans: outside the lock
  std::lock_guard<std::mutex> lock(mutex);
  const auto [it, inserted] = decisions().emplace(key, std::move(choice));
  if (inserted) {
    lines().push_back("attention " + p.text() + ": " + it->second.implementation +
                      (it->second.reason.empty() ? "" : " (" + it->second.reason + ")"));
  }
  return it->second;
}

std::vector<std::string> gpu_kernel_lines() {
  std::vector<std::string> out = {"dense GEMMs: cuBLASLt", "expert GEMMs: builtin grouped GEMM (WMMA)"};
  std::lock_guard<std::mutex> lock(mutex);
  out.insert(out.end(), lines().begin(), lines().end());
  out.push_back("other ops: builtin");
  return out;
}

}  // namespace moe::kernels
