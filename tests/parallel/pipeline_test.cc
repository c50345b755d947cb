// Pipeline parallelism for dense models on CPU ranks (under mpirun): every
// layout with pp > 1 of this many ranks trains a tiny dense model for 6
// steps, and its per-step loss and global grad norm match one process
// training the same global batch, within 1e-5 relative; with as many
// micro-batches as stages, more (1F1B's steady state) and fewer (no steady
// state), and with an uneven split of the blocks. Each rank allocates what
// --dry-run plans for its stage (the largest stage exactly), and the first
// stage sends what --dry-run's communication plan says. A checkpoint
// saved under pp continues in one process as the pipelined run continues.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>
#include <vector>

#include "src/checkpoint/checkpoint.h"
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

constexpr int64_t kSteps = 6;
std::string data_dir;

struct Case {
  std::string name;
  moe::Layout layout;
};

moe::Layout pipelined(int64_t pp, int64_t dp_shard, int64_t tp) {
  moe::Layout l = moe::test::layout_of(1, dp_shard, 1, tp);
  l.pp = pp;
  return l;
}

std::vector<Case> layouts_for(int ranks) {
  if (ranks == 2) return {{"pp=2", pipelined(2, 1, 1)}};
  if (ranks == 4) {
    return {
        {"pp=2 x dp_shard=2", pipelined(2, 2, 1)}, {"pp=4", pipelined(4, 1, 1)}, {"pp=2 x tp=2", pipelined(2, 1, 2)}};
  }
  return {};
}

moe::JobConfig dense_config(const moe::Layout& layout, int64_t layers, int64_t accum, const std::string& ckpt = "") {
  std::vector<std::string> o = {"model.dim=32",
                                "model.n_layers=" + std::to_string(layers),
                                "model.n_heads=4",
                                "model.n_kv_heads=2",
                                "model.vocab_size=64",
                                "model.ffn_hidden_dim=64",
                                "model.max_seq_len=16",
                                "train.seq_len=8",
                                "train.batch_size=2",
                                "train.grad_accum_steps=" + std::to_string(accum),
                                "train.max_steps=6",
                                "train.mixed_precision=fp32",
                                "train.seed=5",
                                "optimizer.lr=0.003",
                                "scheduler.warmup_steps=2",
                                "data.dataset_path=" + data_dir,
                                "data.file_pattern=*.npy",
                                "checkpoint.dir=" + ckpt};
  moe::JobConfig cfg = moe::load_config_text("", "tiny", o).cfg;
  moe::test::set_layout(cfg.distributed, layout);
  moe::validate_config(cfg);
  moe::fill_derived_defaults(cfg);
  return cfg;
}

// Steps [first, last]; loads `from` first and saves after `save_at` when given.
std::vector<moe::StepMetrics> train(const moe::JobConfig& cfg, moe::Mesh& mesh, int64_t first = 1,
                                    int64_t last = kSteps, const std::string& from = "", int64_t save_at = 0,
                                    const moe::Placement& where = moe::Placement{moe::Device::kCpu, moe::DType::kF32}) {
  const moe::TokenDataset data =
      moe::TokenDataset::open(cfg.data.dataset_path, cfg.data.file_pattern, cfg.model.vocab_size);
  const moe::BatchSampler sampler(data, cfg.train.seq_len, cfg.train.batch_size, cfg.train.seed);
  moe::StepRunner runner(cfg, mesh, where);
  const moe::DryRunReport plan = moe::estimate_dry_run(cfg, mesh.layout());
  if (mesh.coord().pp == plan.pp_stage) {
    CHECK(runner.pool().bytes_requested() == plan.total_bytes);
  } else {
    CHECK(runner.pool().bytes_requested() <= plan.total_bytes);
  }
  if (!from.empty()) REQUIRE(runner.load_checkpoint(from).step == first - 1);
  std::vector<moe::StepMetrics> out;
  for (int64_t step = first; step <= last; ++step) {
    out.push_back(runner.step(step, sampler));
    if (step == save_at) moe::save_checkpoint(cfg, {step, 0}, runner.state_tensors(), mesh.world());
  }
  return out;
}

void check_close(double got, double want, const char* what, int64_t step) {
  INFO(what << " at step " << step << ": " << got << " vs one process " << want);
  CHECK(std::abs(got - want) <= 1e-5 * std::max(std::abs(want), 1e-3));
}

void write_dataset() {
  std::vector<uint16_t> tokens(16384);
  uint64_t x = 99;
  for (size_t i = 0; i < tokens.size(); ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    tokens[i] = static_cast<uint16_t>((x >> 40) % 4 == 0 ? (x >> 33) % 64 : (i * 5 + i / 7) % 64);
  }
  data_dir = moe::test::fresh_dir("pipeline_rank" + std::to_string(test_world().rank()));
  moe::test::write_token_npy(data_dir + "/tokens.npy", tokens);
}

}  // namespace

TEST_CASE("a dense model pipelined over this many ranks matches one process") {
  if (data_dir.empty()) write_dataset();
  const std::vector<Case> cases = layouts_for(test_world().size());
  REQUIRE(!cases.empty());
  for (const Case& c : cases) {
    const int64_t D = c.layout.dp_shard;
    // Fewer micro-batches than stages, as many, and more; 5 blocks split unevenly.
    for (const int64_t accum : {int64_t{1}, c.layout.pp, 2 * c.layout.pp + 1}) {
      for (const int64_t layers : {int64_t{4}, int64_t{5}}) {
        DYNAMIC_SECTION(c.name << ", " << accum << " micro-batches, " << layers << " blocks") {
          const moe::JobConfig cfg = dense_config(c.layout, layers, accum);
          moe::Mesh mesh(c.layout, moe::make_world(c.layout, moe::Placement{}));
          const std::vector<moe::StepMetrics> got = train(cfg, mesh);
          // What --dry-run's communication plan says the first stage sends: each micro-batch's output, once.
          if (mesh.coord().pp == 0) {
            const moe::CommPlan plan = moe::plan_communication(cfg, c.layout, 4, 0.0, false);
            const moe::PlannedCollective* sends = nullptr;
            for (const moe::PlannedCollective& pc : plan.collectives)
              if (pc.group == "pp") sends = &pc;
            REQUIRE(sends != nullptr);
            CHECK(mesh.traffic().pp.send.calls == kSteps * sends->launches);
            CHECK(mesh.traffic().pp.send.bytes == kSteps * sends->bytes);
            CHECK(sends->bytes == accum * 2 * 8 * 32 * 4);  // micro-batches x batch x seq x dim x fp32
          }

          const moe::JobConfig one_cfg = dense_config(moe::Layout{}, layers, accum * D);
          moe::Mesh one(moe::Layout{}, moe::single_process_world());
          const std::vector<moe::StepMetrics> want = train(one_cfg, one);
          for (int64_t s = 0; s < kSteps; ++s) {
            check_close(got[s].loss, want[s].loss, "loss", s + 1);
            check_close(got[s].grad_norm, want[s].grad_norm, "grad norm", s + 1);
          }
          CHECK(want.back().loss < want.front().loss);
        }
      }
    }
  }
}

TEST_CASE("a checkpoint saved by a pipeline continues in one process as the pipeline continues") {
  if (data_dir.empty()) write_dataset();
  const std::vector<Case> cases = layouts_for(test_world().size());
  const Case& c = cases.front();
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp ? tmp : "/tmp") + "/pipeline_ckpt";
  const int64_t accum = 3;
  const moe::JobConfig cfg = dense_config(c.layout, 4, accum, dir);
  moe::Mesh mesh(c.layout, moe::make_world(c.layout, moe::Placement{}));
  const std::vector<moe::StepMetrics> piped = train(cfg, mesh, 1, kSteps, "", 3);
  // Rank 0 alone continues from step 3 with the same global batch.
  if (test_world().rank() == 0) {
    const moe::JobConfig one_cfg = dense_config(moe::Layout{}, 4, accum * c.layout.dp_shard, dir);
    moe::Mesh one(moe::Layout{}, moe::single_process_world());
    const std::vector<moe::StepMetrics> resumed = train(one_cfg, one, 4, kSteps, dir + "/step_3");
    for (int64_t s = 4; s <= kSteps; ++s) check_close(resumed[s - 4].loss, piped[s - 1].loss, "resumed loss", s);
  }
  test_world().barrier();
}

#if MOE_TRAIN_HAS_CUDA
// On GPUs (one per rank, NCCL's send and receive between the stages): pp = 2
// against one GPU, in fp32, where the stages run the one process's kernels.
TEST_CASE("a dense model pipelined over GPUs matches one GPU", "[.gpu]") {
  if (data_dir.empty()) write_dataset();
  const moe::Layout layout = pipelined(test_world().size(), 1, 1);
  const moe::Placement gpu{moe::Device::kCuda, moe::DType::kF32};
  const moe::JobConfig cfg = dense_config(layout, 4, 3);
  moe::Mesh mesh(layout, moe::make_world(layout, gpu));
  const std::vector<moe::StepMetrics> got = train(cfg, mesh, 1, kSteps, "", 0, gpu);
  moe::Mesh one(moe::Layout{}, moe::single_process_world());
  const std::vector<moe::StepMetrics> want = train(dense_config(moe::Layout{}, 4, 3), one, 1, kSteps, "", 0, gpu);
  for (int64_t s = 0; s < kSteps; ++s) {
    check_close(got[s].loss, want[s].loss, "loss", s + 1);
    check_close(got[s].grad_norm, want[s].grad_norm, "grad norm", s + 1);
  }
}
#endif
