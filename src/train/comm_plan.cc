#include "src/train/comm_plan.h"

#include <fmt/format.h>

#include <set>

#include "src/config/derived.h"
#include "src/config/router_names.h"
#include "src/model/param_spec.h"
#include "src/parallel/mesh.h"
#include "src/parallel/param_sharding.h"
#include "src/train/cpu_peak.h"

namespace moe {
namespace {

constexpr double kH100Bf16Flops = 989e12;  // H100/H200 SXM, bf16 dense

// The members of rank 0's group that varies `axes` (the rest of its
// coordinates fixed at 0), and whether they sit on more than one node of
// gpus_per_node consecutive ranks (Slurm's block distribution).
bool spans_nodes(const Layout& l, MeshCoord axes, int64_t gpus_per_node) {
  std::set<int64_t> nodes;
  for (int64_t r = 0; r < l.world(); ++r) {
    const MeshCoord c = mesh_coord(l, r);
    if ((!axes.dp_replicate && c.dp_replicate) || (!axes.dp_shard && c.dp_shard) || (!axes.ep && c.ep) ||
        (!axes.tp && c.tp) || (!axes.pp && c.pp)) {
      continue;
    }
    nodes.insert(r / gpus_per_node);
  }
  return nodes.size() > 1;
}

// Sizes of this rank's parameters, from the registry (rank 0's cut; every
// rank's is the same size).
struct ParamSizes {
  int64_t outer_gathered = 0, blocks_gathered = 0;  // FSDP units: elements gathered (padded)
  int64_t expert_shard = 0, other_shard = 0;        // elements of the gradient shards
};

ParamSizes param_sizes(const ModelConfig& m, const Layout& layout) {
  ParamSizes s;
  for (const ParamSpec& p : model_param_specs(m)) {
    if (!on_pipeline_stage(p, m, layout.pp, 0)) continue;  // rank 0 is on the first stage
    const ParamPlacement place = place_parameter(p.shape, p.tp_dim, p.expert_parallel, layout, MeshCoord{});
    (p.block < 0 ? s.outer_gathered : s.blocks_gathered) += place.gathered_numel();
    int64_t shard = 1;
    for (int64_t d : place.shard_shape()) shard *= d;
    (p.expert_parallel ? s.expert_shard : s.other_shard) += shard;
  }
  return s;
}

}  // namespace

CommPlan plan_communication(const JobConfig& cfg, const Layout& l, int64_t c, double flops_per_token, bool on_gpu) {
  const ModelConfig& m = cfg.model;
  const DistributedConfig& d = cfg.distributed;
  const int64_t accum = cfg.train.grad_accum_steps, N = cfg.train.batch_size * cfg.train.seq_len, D = m.dim;
  const int64_t L = m.n_layers, moe_blocks = num_moe_blocks(m), dense = L - moe_blocks;
  // Full activation checkpointing runs each block's forward, collectives
  // included, again before its backward (selective recomputes no collective).
  const int64_t again = cfg.train.activation_checkpointing == ActivationCheckpointing::kFull ? 1 : 0;
  const ParamSizes p = param_sizes(m, l);
  CommPlan plan;
  auto add = [&](const char* what, const char* group, int64_t ranks, MeshCoord axes, int64_t launches, int64_t bytes,
                 bool all_reduce) {
    if (ranks <= 1) return;
    PlannedCollective pc{what, group, ranks, spans_nodes(l, axes, d.gpus_per_node), launches, bytes};
    const double bw = 1e9 * (pc.across_nodes ? d.inter_node_gb_s : d.intra_node_gb_s);
    const double latency = 1e-6 * (pc.across_nodes ? d.inter_node_latency_us : d.intra_node_latency_us);
    const double factor = (all_reduce ? 2.0 : 1.0) * static_cast<double>(ranks - 1) / static_cast<double>(ranks);
    pc.seconds = static_cast<double>(launches) * latency + factor * static_cast<double>(bytes) / bw;
    plan.collectives.push_back(pc);
  };
  // FSDP, per micro-batch: the outer unit (embedding, final norm, LM head)
  // gathered once, each block twice (forward, backward); every unit's fp32
  // gradients reduce-scattered once.
  add("FSDP all-gather of the weights", "dp_shard", l.dp_shard, {0, 1, 0, 0}, accum * (1 + 2 * L),
      accum * (p.outer_gathered + 2 * p.blocks_gathered) * c, false);
  add("FSDP reduce-scatter of the gradients", "dp_shard", l.dp_shard, {0, 1, 0, 0}, accum * (1 + L),
      accum * (p.outer_gathered + p.blocks_gathered) * 4, false);
  // TP, per micro-batch: attention's output and its input gradient in every
  // block, the dense MLP's likewise (N x D activations each), and the outputs
  // again in a full recompute.
  const int64_t tp_launches = accum * (2 + again) * (L + dense);
  add("TP all-reduce of the activations", "tp", l.tp, {0, 0, 0, 1}, tp_launches, tp_launches * N * D * c, true);
  // EP, per MoE block and micro-batch: the per-expert row counts (int32),
  // then the kept (token, slot) rows out to the experts' ranks and back, in
  // the forward and again in the backward. A rank sends its own kept rows out
  // and the rows it received back: dropless, the group sends 2 x ep x N x
  // top_k rows each time, so a rank N x top_k rows out and, at balanced
  // routing, as many back. A full recompute sends the forward's three again.
  // Expert dropout sends each row's (micro-batch, pair) id with it in the
  // forward (8 bytes a row), which keys its mask. Under expert choice the
  // experts take num_experts x capacity rows, so a rank sends that many out.
  if (moe_blocks > 0 && l.ep > 1) {
    const int64_t counts = m.num_experts * 4, rows = moe_routed_pairs(m, N);
    const int64_t ids = m.moe_expert_dropout > 0 ? 1 : 0;
    add("EP all-to-all of the routed tokens", "ep", l.ep, {0, 0, 1, 0},
        accum * moe_blocks * (5 + 3 * again + ids * (1 + again)),
        accum * moe_blocks * ((1 + again) * (counts + ids * rows * 8) + (4 + 2 * again) * rows * D * c), false);
    // Capacity caps a top-k router's rows; experts that choose take exactly theirs.
    plan.collectives.back().upper_bound = moe_capacity(m, N, true) > 0 && !router_experts_choose(m.moe_router);
  }
  // PP, per micro-batch: the first stage sends its output on (N x D
  // activations); a middle stage also sends its input's gradient back.
  add("PP sends of stage outputs", "pp", l.pp, {0, 0, 0, 0, 1}, accum, accum * N * D * c, false);
  // Per step: the fp32 gradient shards, summed over their replicas.
  add("all-reduce of the expert gradients", "dp_replicate", l.dp_replicate, {1, 0, 0, 0}, 1, p.expert_shard * 4, true);
  add("all-reduce of the other gradients", "non_expert_replicas", l.dp_replicate * l.ep, {1, 0, 1, 0}, 1,
      p.other_shard * 4, true);

  const double tokens =
      static_cast<double>(cfg.train.batch_size * cfg.train.seq_len * accum * l.dp_replicate * l.dp_shard * l.ep);
  plan.flops_per_rank = flops_per_token * tokens / static_cast<double>(l.world());
  if (cfg.metrics.peak_tflops > 0) {
    plan.peak_flops = cfg.metrics.peak_tflops * 1e12;
    plan.peak_source = "metrics.peak_tflops";
  } else if (on_gpu) {
    plan.peak_flops = kH100Bf16Flops;
    plan.peak_source = "an H100's bf16 dense peak; set metrics.peak_tflops for another GPU";
  } else if (const auto cpu = cached_cpu_peak_flops()) {
    plan.peak_flops = *cpu;
    plan.peak_source = "this CPU's sgemm rate, as a training run measured it";
  }
  if (plan.peak_flops > 0) plan.compute_seconds = plan.flops_per_rank / (plan.peak_flops * cfg.metrics.planned_mfu);
  return plan;
}

std::string format_comm_plan(const CommPlan& plan, const JobConfig& cfg) {
  const DistributedConfig& d = cfg.distributed;
  std::string out = "\ncommunication per step and rank";
  if (plan.collectives.empty()) {
    out += ": none (every group has one rank)\n";
  } else {
    out += fmt::format(
        " (network: {} ranks per node, in a node {:g} GB/s and {:g} us, across nodes {:g} GB/s and {:g} us)\n",
        d.gpus_per_node, d.intra_node_gb_s, d.intra_node_latency_us, d.inter_node_gb_s, d.inter_node_latency_us);
    double total = 0;
    int64_t total_bytes = 0;
    for (const PlannedCollective& c : plan.collectives) {
      out +=
          fmt::format("  {:<40}{:<20}{:>3} ranks {:<13}{:>6} launches {}{:>12} {:>10.2f} ms\n", c.what, c.group,
                      c.ranks, c.across_nodes ? "across nodes" : "in a node", c.launches, c.upper_bound ? "<=" : "  ",
                      fmt::format("{:.3f} GiB", c.bytes / double(1 << 30)), 1e3 * c.seconds);
      total += c.seconds;
      total_bytes += c.bytes;
    }
    out += fmt::format("  {:<40}{:<62}{:>12} {:>10.2f} ms  (not overlapped with compute)\n", "total", "",
                       fmt::format("{:.3f} GiB", total_bytes / double(1 << 30)), 1e3 * total);
  }
  if (plan.peak_flops > 0) {
    out += fmt::format("compute per step and rank: {:.3g} FLOPs, {:.2f} ms at {:.0f}% MFU of {:.4g} TFLOP/s ({})\n",
                       plan.flops_per_rank, 1e3 * plan.compute_seconds, 100 * cfg.metrics.planned_mfu,
                       plan.peak_flops / 1e12, plan.peak_source);
  } else {
    out += fmt::format(
        "compute per step and rank: {:.3g} FLOPs (no measured CPU rate here yet: a training run measures it once; "
        "or set metrics.peak_tflops)\n",
        plan.flops_per_rank);
  }
  return out;
}

}  // namespace moe
