// The --dry-run plan of the communication (train/comm_plan.h) against the
// bytes the communicator really moved: on 4 CPU ranks (under mpirun), one
// training step of a tiny MoE model (2 micro-batches, dropless routing, a shared expert) under
// layouts that use every group, counted by the mesh's traffic counters, in
// fp32 and in bf16 (the bf16 path runs on the CPU through ops.h), and with
// full activation checkpointing, whose recompute repeats the forward's collectives,
// and with expert dropout, whose row ids travel with the rows.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/data/batch_sampler.h"
#include "src/data/token_dataset.h"
#include "src/parallel/mesh.h"
#include "src/train/comm_plan.h"
#include "src/train/dry_run.h"
#include "src/train/step_runner.h"
#include "src/train/world.h"
#include "tests/data/test_files.h"
#include "tests/parallel/layouts.h"
#include "tests/parallel/mpi_test_main.h"

using moe::test::test_world;

namespace {

std::string data_dir;

moe::JobConfig tiny(const moe::Layout& layout, bool bf16, const std::string& checkpointing, bool expert_dropout) {
  moe::JobConfig cfg =
      moe::load_config_text(
          "", "tiny",
          {"model.dim=32", "model.n_layers=3", "model.n_heads=4", "model.n_kv_heads=2", "model.vocab_size=64",
           "model.ffn_hidden_dim=64", "model.max_seq_len=16", "model.num_experts=4", "model.moe_top_k=2",
           "model.moe_frequency=2", "model.moe_shared_experts=1", "train.seq_len=8", "train.batch_size=2",
           "train.grad_accum_steps=2", std::string("train.mixed_precision=") + (bf16 ? "bf16" : "fp32"),
           "train.activation_checkpointing=" + checkpointing, "data.dataset_path=" + data_dir,
           std::string("model.moe_expert_dropout=") + (expert_dropout ? "0.1" : "0")})
          .cfg;
  moe::test::set_layout(cfg.distributed, layout);
  moe::validate_config(cfg);
  moe::fill_derived_defaults(cfg);
  return cfg;
}

const moe::PlannedCollective* find(const moe::CommPlan& plan, const std::string& group, const std::string& what) {
  for (const moe::PlannedCollective& c : plan.collectives)
    if (c.group == group && c.what.find(what) != std::string::npos) return &c;
  return nullptr;
}

int64_t planned(const moe::CommPlan& plan, const std::string& group, const std::string& what) {
  const moe::PlannedCollective* c = find(plan, group, what);
  return c ? c->bytes : 0;
}

int64_t group_sum(moe::Communicator& group, int64_t mine) {
  return static_cast<int64_t>(moe::all_reduce_value(group, static_cast<double>(mine), moe::ReduceOp::kSum));
}

void check_layout(const std::string& name, const moe::Layout& layout, bool bf16,
                  const std::string& checkpointing = "none", bool expert_dropout = false) {
  DYNAMIC_SECTION(name << (bf16 ? " in bf16" : " in fp32") << ", activation_checkpointing = " << checkpointing
                       << (expert_dropout ? ", expert dropout (row ids sent with the rows)" : "")) {
    const moe::JobConfig cfg = tiny(layout, bf16, checkpointing, expert_dropout);
    const moe::Placement where{moe::Device::kCpu, bf16 ? moe::DType::kBF16 : moe::DType::kF32};
    moe::Mesh mesh(layout, moe::make_world(layout, where));
    const moe::TokenDataset data = moe::TokenDataset::open(data_dir, "*.npy", cfg.model.vocab_size);
    const moe::BatchSampler sampler(data, cfg.train.seq_len, cfg.train.batch_size, cfg.train.seed);
    moe::StepRunner runner(cfg, mesh, where);
    mesh.reset_traffic();  // the step's own
    runner.step(1, sampler);
    const moe::MeshTraffic& t = mesh.traffic();
    const moe::CommPlan plan =
        moe::plan_communication(cfg, layout, bf16 ? 2 : 4, moe::estimate_dry_run(cfg, layout).flops_per_token, false);
    CHECK(t.dp_shard.all_gather.bytes == planned(plan, "dp_shard", "all-gather"));
    CHECK(t.dp_shard.reduce_scatter.bytes == planned(plan, "dp_shard", "reduce-scatter"));
    CHECK(t.tp.all_reduce.bytes == planned(plan, "tp", "all-reduce"));
    // A rank sends its own rows out and the rows it received back: the EP
    // group's total is exact (dropless), a rank's share depends on the routing.
    CHECK(group_sum(mesh.ep(), t.ep.all_to_all.bytes) == layout.ep * planned(plan, "ep", "all-to-all"));
    CHECK(t.dp_replicate.all_reduce.bytes == planned(plan, "dp_replicate", "all-reduce"));
    CHECK(t.non_expert_replicas.all_reduce.bytes == planned(plan, "non_expert_replicas", "all-reduce"));
    // Every group the layout uses moved something, so the checks above compare real traffic.
    if (layout.dp_shard > 1) CHECK(t.dp_shard.all_gather.bytes > 0);
    if (layout.tp > 1) CHECK(t.tp.all_reduce.bytes > 0);
    if (layout.ep > 1) {
      CHECK(t.ep.all_to_all.bytes > 0);
      CHECK(t.ep.all_to_all.calls == find(plan, "ep", "all-to-all")->launches);
    }
    if (layout.tp > 1) CHECK(t.tp.all_reduce.calls == find(plan, "tp", "all-reduce")->launches);
    if (layout.dp_replicate * layout.ep > 1) CHECK(t.non_expert_replicas.all_reduce.bytes > 0);
    if (layout.dp_replicate > 1) CHECK(t.dp_replicate.all_reduce.bytes > 0);
  }
}

}  // namespace

TEST_CASE("the planned bytes of every collective are the bytes moved") {
  REQUIRE(test_world().size() == 4);
  if (data_dir.empty()) {
    std::vector<uint16_t> tokens(4096);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint16_t>((i * 7 + i / 5) % 64);
    data_dir = moe::test::fresh_dir("comm_plan_rank" + std::to_string(test_world().rank()));
    moe::test::write_token_npy(data_dir + "/tokens.npy", tokens);
  }
  const auto L = moe::test::layout_of;  // dp_replicate, dp_shard, ep, tp
  for (bool bf16 : {false, true}) {
    check_layout("tp=2 x dp_shard=2", L(1, 2, 1, 2), bf16);
    check_layout("ep=2 x dp_shard=2", L(1, 2, 2, 1), bf16);
    check_layout("dp_replicate=2 x ep=2", L(2, 1, 2, 1), bf16);
    check_layout("tp=2 x ep=2", L(1, 1, 2, 2), bf16);
  }
  check_layout("tp=2 x ep=2", L(1, 1, 2, 2), false, "full");
  check_layout("tp=2 x dp_shard=2", L(1, 2, 1, 2), false, "full");
  check_layout("tp=2 x ep=2", L(1, 1, 2, 2), false, "selective");
  check_layout("ep=2 x dp_shard=2", L(1, 2, 2, 1), false, "none", true);
  check_layout("tp=2 x ep=2", L(1, 1, 2, 2), true, "full", true);
}
