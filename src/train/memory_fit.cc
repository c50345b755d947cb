#include "src/train/memory_fit.h"

#include <fmt/format.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "src/core/cuda_device.h"
#include "src/parallel/launch_env.h"

namespace moe {
namespace {

constexpr double kGiB = 1024.0 * 1024 * 1024;

// The first number in `path` (a cgroup limit), or -1 ("max", missing, unreadable).
int64_t read_limit(const char* path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text) || text.empty() || text[0] < '0' || text[0] > '9') return -1;
  return static_cast<int64_t>(std::strtoull(text.c_str(), nullptr, 10));
}

// What the ranks that share the budget plan for together.
double needed(int64_t planned_bytes_per_rank, const MemoryBudget& budget) {
  return static_cast<double>(planned_bytes_per_rank) * static_cast<double>(budget.ranks_sharing);
}

}  // namespace

int64_t host_memory_bytes() {
  int64_t total = 0;
  std::ifstream meminfo("/proc/meminfo");
  for (std::string key; meminfo >> key;) {
    int64_t kib = 0;
    meminfo >> kib;
    if (key == "MemTotal:") total = kib * 1024;
    meminfo.ignore(256, '\n');
  }
  // cgroup v2, then v1 (whose "no limit" is a huge number, not "max").
  for (const char* path : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    const int64_t limit = read_limit(path);
    if (limit > 0 && (total == 0 || limit < total)) total = limit;
  }
  return total;
}

std::optional<MemoryBudget> memory_budget(bool on_gpu, int gpu) {
  if (on_gpu) {
    const int64_t bytes = gpu >= 0 ? cuda_device_memory_bytes(gpu) : 0;
    if (bytes <= 0) return std::nullopt;
    return MemoryBudget{static_cast<int64_t>(0.9 * static_cast<double>(bytes)), 1,
                        fmt::format("GPU {} ({}; 10% of its {:.1f} GiB kept for CUDA and NCCL)", gpu,
                                    cuda_device_description(gpu), static_cast<double>(bytes) / kGiB)};
  }
  const int64_t bytes = host_memory_bytes();
  if (bytes <= 0) return std::nullopt;
  const int64_t ranks = read_launch_env().local_size;
  return MemoryBudget{bytes, ranks,
                      ranks > 1 ? fmt::format("this node's host RAM (shared by its {} ranks)", ranks)
                                : std::string("this machine's host RAM")};
}

std::string memory_fit_problem(int64_t planned_bytes_per_rank, const MemoryBudget& budget) {
  const double need = needed(planned_bytes_per_rank, budget);
  if (need <= static_cast<double>(budget.bytes)) return "";
  return fmt::format(
      "the plan needs {:.2f} GiB per rank{}, and {} has {:.2f} GiB for it: it cannot fit; lower "
      "train.batch_size or train.seq_len (raise grad_accum_steps to keep the global batch), shard "
      "more (dp_shard, ep, tp), or use a smaller model (--dry-run shows the plan)",
      static_cast<double>(planned_bytes_per_rank) / kGiB,
      budget.ranks_sharing > 1
          ? fmt::format(" ({:.2f} GiB for the {} ranks of this node)", need / kGiB, budget.ranks_sharing)
          : "",
      budget.what, static_cast<double>(budget.bytes) / kGiB);
}

std::string memory_fit_summary(int64_t planned_bytes_per_rank, const MemoryBudget& budget) {
  const double have = static_cast<double>(budget.bytes);
  return fmt::format("fits {} ({:.1f} GiB): {:.1f} GiB to spare", budget.what, have / kGiB,
                     (have - needed(planned_bytes_per_rank, budget)) / kGiB);
}

}  // namespace moe
