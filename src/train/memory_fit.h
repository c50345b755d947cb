// Does the plan fit? The memory --dry-run plans per rank (dry_run.h), against
// what this machine has: host RAM for the CPU (the cgroup's limit where it is
// lower, shared by the ranks on the node), a GPU's memory for CUDA (less 10%
// for CUDA's and NCCL's own use, and the caching allocator's rounding).
// Training and --dry-run refuse a plan that cannot fit, in one line with both
// numbers, instead of failing in an allocation.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace moe {

struct MemoryBudget {
  int64_t bytes = 0;          // what the ranks of one node (or one GPU's rank) may plan for
  int64_t ranks_sharing = 1;  // ranks on this node that share it (CPU), else 1
  std::string what;           // "this machine's host RAM", "GPU 0 (NVIDIA H100 ...; 10% of its 79.1 GiB kept ...)"
};

// Host RAM: MemTotal, or the memory cgroup's limit where lower.
int64_t host_memory_bytes();

// For train.device "cpu": host RAM, shared by the job's ranks on this node
// (read_launch_env().local_size); for
// "cuda": GPU `gpu`'s memory, kept to 90%; nothing when the GPU cannot be asked.
std::optional<MemoryBudget> memory_budget(bool on_gpu, int gpu);

// "" when `planned_bytes_per_rank` fits the budget, else the refusal: both
// numbers and what to lower.
std::string memory_fit_problem(int64_t planned_bytes_per_rank, const MemoryBudget& budget);
// The line --dry-run prints for a plan that fits: "fits <what> (X GiB): Y GiB to spare".
std::string memory_fit_summary(int64_t planned_bytes_per_rank, const MemoryBudget& budget);

}  // namespace moe
