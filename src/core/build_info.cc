#include "src/core/build_info.h"

#if MOE_TRAIN_HAS_CUDA
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <nccl.h>
#if !MOE_TRAIN_CUDA_EMULATOR
#include "third_party/cuda/cuda_libraries.h"
#endif
#endif

#include <cstdio>

namespace moe {

// Written by the build from the workspace status (scripts/workspace_status.sh).
extern const char* const kBuildCommit;

namespace {

constexpr const char* kVersion = "0.2.0";

#if MOE_TRAIN_HAS_CUDA
// CUDA's encodings: runtime and driver 1000 * major + 10 * minor; cuBLAS and
// NCCL (2.9 and later) 10000 * major + 100 * minor + patch.
std::string cuda_version(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }
std::string library_version(long long v) {
  return std::to_string(v / 10000) + "." + std::to_string(v % 10000 / 100) + "." + std::to_string(v % 100);
}
#endif

}  // namespace

const char* moe_train_version() { return kVersion; }
const char* build_commit() { return kBuildCommit; }

std::vector<std::pair<std::string, std::string>> build_facts() {
  std::vector<std::pair<std::string, std::string>> facts = {{"version", kVersion}, {"commit", kBuildCommit}};
#if MOE_TRAIN_HAS_CUDA
#if MOE_TRAIN_CUDA_EMULATOR
  facts.emplace_back("cuda_emulator", "yes");
#endif
  facts.emplace_back("cuda_built", cuda_version(CUDART_VERSION));
  facts.emplace_back("cublas_built", library_version(CUBLAS_VERSION));
  facts.emplace_back("nccl_built", library_version(NCCL_VERSION_CODE));
  int driver = 0, runtime = 0, nccl = 0;
  // A driver version of 0 means no driver is installed.
  facts.emplace_back("cuda_driver",
                     cudaDriverGetVersion(&driver) == cudaSuccess && driver > 0 ? cuda_version(driver) : "none");
  facts.emplace_back("cuda_runtime", cudaRuntimeGetVersion(&runtime) == cudaSuccess ? cuda_version(runtime) : "none");
#if MOE_TRAIN_CUDA_EMULATOR
  const bool libraries = true;
  const std::string cublas_at, nccl_at;
#else
  // Opened at run time: "none" where they are missing (the CPU path needs neither).
  const bool libraries = cuda_libraries::load().empty();
  const std::string cublas_at = " (" + cuda_libraries::cublaslt_path() + ")";
  const std::string nccl_at = " (" + cuda_libraries::nccl_path() + ")";
#endif
  facts.emplace_back("cublas_found",
                     libraries ? library_version(static_cast<long long>(cublasLtGetVersion())) + cublas_at : "none");
  facts.emplace_back("nccl_found",
                     libraries && ncclGetVersion(&nccl) == ncclSuccess ? library_version(nccl) + nccl_at : "none");
#if !MOE_TRAIN_CUDA_EMULATOR
  facts.emplace_back("cudnn_found", cuda_libraries::cudnn_found());
#endif
  cudaGetLastError();  // a failed query leaves nothing behind for the next CUDA call
#else
  facts.emplace_back("cuda_built", "none");
#endif
  return facts;
}

std::string version_text() {
  std::string text = std::string("moe_train ") + kVersion + "\ncommit " + kBuildCommit + "\n";
  for (const auto& [key, value] : build_facts()) {
    if (key == "version" || key == "commit") continue;
    text += key + " " + value + "\n";
  }
  return text;
}

std::string version_line() {
  std::string line;
  for (const auto& [key, value] : build_facts()) line += (line.empty() ? "" : ", ") + key + " " + value;
  return line;
}

}  // namespace moe
