// The communication of one optimizer step, on paper: for each collective a
// rank takes part in (FSDP's weight gathers and gradient reduce-scatters,
// TP's activation all-reduces, EP's token all-to-alls, the gradient all-reduce
// across replicas), its payload bytes per step and rank, and its time on a
// stated network model, beside the compute time at a stated MFU. The bytes
// are those the mesh's traffic counters count (parallel/traffic_count.h);
// a multi-rank test holds them equal. docs/dry_run.md states the formulas.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "src/config/derived.h"
#include "src/config/job_config.h"

namespace moe {

struct PlannedCollective {
  std::string what;   // "FSDP all-gather of the weights"
  std::string group;  // the mesh group: "dp_shard", "tp", "ep", "dp_replicate", "non_expert_replicas"
  int64_t ranks = 0;  // its size
  bool across_nodes = false;
  int64_t launches = 0;      // per step (a batch of per-parameter collectives is one launch)
  int64_t bytes = 0;         // payload per step and rank (traffic_count.h's definition)
  // EP: a rank sends back what the others routed to its experts, so its
  // bytes are those of balanced routing (the group's total is exact when
  // dropless); with a capacity, fewer rows may be kept.
  bool upper_bound = false;
  double seconds = 0;        // on the network model
};

struct CommPlan {
  std::vector<PlannedCollective> collectives;  // only groups of more than one rank
  double flops_per_rank = 0;                   // training FLOPs per step and rank
  double peak_flops = 0;                       // per rank; 0 when unknown
  std::string peak_source;                     // where the peak comes from
  double compute_seconds = 0;                  // flops_per_rank / (peak x metrics.planned_mfu)
};

// `compute_bytes`: 2 when weights and activations are bf16, else 4.
// `on_gpu`: the peak is a GPU's (metrics.peak_tflops, else an H100's bf16
// spec), else the CPU's measured rate where one is cached.
CommPlan plan_communication(const JobConfig& cfg, const Layout& layout, int64_t compute_bytes, double flops_per_token,
                            bool on_gpu);

// The --dry-run section.
std::string format_comm_plan(const CommPlan& plan, const JobConfig& cfg);

}  // namespace moe
