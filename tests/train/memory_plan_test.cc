// Memory is planned, not discovered: what --dry-run reports per rank
// (weights, copies, gradients, moments, activations) is exactly what a rank's
// StepRunner allocates, byte for byte, for dense and MoE models, tied and
// untied, with capacity or dropless, with shared experts, in fp32 and bf16.
// (The multi-rank layouts are checked the same way in
// tests/parallel/layout_equivalence_test.cc.)
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "src/config/derived.h"
#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/parallel/mesh.h"
#include "src/train/dry_run.h"
#include "src/train/step_runner.h"

namespace {

moe::JobConfig config(std::vector<std::string> overrides) {
  std::vector<std::string> o = {"model.dim=64",       "model.n_layers=3",     "model.n_heads=4",
                                "model.n_kv_heads=2", "model.vocab_size=300", "model.max_seq_len=32",
                                "train.seq_len=16",   "train.batch_size=3",   "train.ce_chunk_size=20"};
  o.insert(o.end(), overrides.begin(), overrides.end());
  moe::JobConfig cfg = moe::load_config_text("", "memory", o).cfg;
  moe::validate_config(cfg);
  moe::fill_derived_defaults(cfg);
  return cfg;
}

}  // namespace

TEST_CASE("--dry-run's memory per rank is what a rank allocates") {
  const std::vector<std::pair<std::string, std::vector<std::string>>> models = {
      {"dense", {}},
      {"MoE top-2 of 4, dropless", {"model.num_experts=4", "model.moe_top_k=2", "model.moe_frequency=2"}},
      {"MoE with capacity, a shared expert, sigmoid router, tied",
       {"model.num_experts=8", "model.moe_top_k=2", "model.moe_frequency=1", "model.moe_capacity_factor=1.25",
        "model.moe_shared_experts=1", "model.moe_router=sigmoid_topk", "model.tie_embeddings=true"}},
      {"automatic LM-head chunk", {"train.ce_chunk_size=0", "model.num_experts=4", "model.moe_top_k=1"}},
  };
  for (const auto& [name, overrides] : models) {
    for (const std::string precision : {"fp32", "bf16"}) {
      DYNAMIC_SECTION(name << ", " << precision) {
        std::vector<std::string> o = overrides;
        o.push_back("train.mixed_precision=" + precision);
        const moe::JobConfig cfg = config(o);
        const moe::DryRunReport plan = moe::estimate_dry_run(cfg, moe::Layout{});
        REQUIRE(plan.compute_dtype == precision);
        moe::Mesh mesh(moe::Layout{}, moe::single_process_world());
        const moe::StepRunner runner(
            cfg, mesh, moe::Placement{moe::Device::kCpu, precision == "bf16" ? moe::DType::kBF16 : moe::DType::kF32});
        CHECK(runner.pool().bytes_requested() == plan.total_bytes);
      }
    }
  }
}
