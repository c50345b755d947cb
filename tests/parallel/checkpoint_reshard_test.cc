// Checkpoints across layouts, on 4 CPU ranks (under mpirun): a tiny MoE
// trains 5 steps under dp_shard = 4 and saves; then
// - the same layout resumes and steps 6-10 are bit-identical to the
//   uninterrupted run;
// - tp = 2 x ep = 2, and a single process, load the same checkpoint and
//   continue within 1e-5 of it (the same global batch: grad_accum_steps is
//   scaled with the data-parallel degree);
// - every expert of every layer survives the round trip (checked per expert).
// On GPUs (hidden case, tag [gpu]: one GPU per rank, NCCL; the CI runs it on
// the CUDA emulator) the same resumes hold, and one CPU process continues the
// GPUs' checkpoint within the same tolerance: checkpoints do not depend on the
// device that wrote them.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>

#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/data/batch_sampler.h"
#include "src/data/token_dataset.h"
#include "src/parallel/communicator.h"
#include "src/parallel/mesh.h"
#include "src/checkpoint/checkpoint.h"
#include "src/train/step_runner.h"
#include "src/train/world.h"
#include "tests/data/test_files.h"
#include "tests/parallel/layouts.h"
#include "tests/parallel/mpi_test_main.h"

using moe::test::test_world;

namespace fs = std::filesystem;

using moe::test::layout_of;

namespace {

std::string data_dir, ckpt_dir;

moe::JobConfig config(const moe::Layout& l, int64_t accum) {
  moe::JobConfig cfg = moe::load_config_text("", "tiny",
                                             {"model.dim=32",
                                              "model.n_layers=2",
                                              "model.n_heads=4",
                                              "model.n_kv_heads=2",
                                              "model.vocab_size=64",
                                              "model.ffn_hidden_dim=64",
                                              "model.max_seq_len=16",
                                              "model.num_experts=4",
                                              "model.moe_top_k=2",
                                              "model.moe_frequency=1",
                                              "model.moe_shared_experts=1",
                                              "model.moe_router=sigmoid_topk",
                                              "model.moe_capacity_factor=1.25",
                                              "train.seq_len=8",
                                              "train.batch_size=2",
                                              "train.grad_accum_steps=" + std::to_string(accum),
                                              "train.max_steps=10",
                                              "train.mixed_precision=fp32",
                                              "optimizer.lr=0.003",
                                              "scheduler.warmup_steps=2",
                                              "data.dataset_path=" + data_dir,
                                              "checkpoint.dir=" + ckpt_dir})
                           .cfg;
  moe::test::set_layout(cfg.distributed, l);
  moe::validate_config(cfg);
  moe::fill_derived_defaults(cfg);
  return cfg;
}

struct Trained {
  std::vector<double> loss;  // by step, 1-based (index 0 unused)
};

// Runs steps [first, last] of a run under `mesh`, optionally loading `from`
// first and saving after step `save_at`.
Trained run(const moe::JobConfig& cfg, moe::Mesh& mesh, int64_t first, int64_t last, const std::string& from,
            int64_t save_at, const moe::Placement& where = moe::Placement{}) {
  const moe::TokenDataset data = moe::TokenDataset::open(cfg.data.dataset_path, "*.npy", cfg.model.vocab_size);
  const moe::BatchSampler sampler(data, cfg.train.seq_len, cfg.train.batch_size, cfg.train.seed);
  moe::StepRunner runner(cfg, mesh, where);
  const auto state = runner.state_tensors();
  if (!from.empty()) REQUIRE(moe::load_checkpoint(from, state).step == first - 1);
  Trained t;
  t.loss.assign(static_cast<size_t>(last + 1), 0.0);
  for (int64_t s = first; s <= last; ++s) {
    t.loss[static_cast<size_t>(s)] = runner.step(s, sampler).loss;
    if (s == save_at) moe::save_checkpoint(cfg, {s, 0}, state, mesh.world());
  }
  return t;
}

void write_dataset() {
  std::vector<uint16_t> tokens(8192);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint16_t>((i * 5 + i / 7 + (i * i) % 3) % 64);
  data_dir = moe::test::fresh_dir("ckpt_reshard_data_rank" + std::to_string(test_world().rank()));
  moe::test::write_token_npy(data_dir + "/tokens.npy", tokens);
  const char* tmp = std::getenv("TEST_TMPDIR");
  ckpt_dir = std::string(tmp ? tmp : "/tmp") + "/ckpt_reshard";
  // Every rank must be done with the previous checkpoint (single-process
  // sections load it without any collective) before rank 0 removes it.
  test_world().barrier();
  if (test_world().rank() == 0) fs::remove_all(ckpt_dir);
  test_world().barrier();
}

}  // namespace

// Saves under dp_shard = 4 after step 5 of 10 (on `where`), then resumes
// under the same layout, tp = 2 x ep = 2, and one process.
void check_resharding(const moe::Placement& where) {
  REQUIRE(test_world().size() == 4);
  write_dataset();
  const moe::Layout fsdp4 = layout_of(1, 4, 1, 1);
  const moe::JobConfig cfg = config(fsdp4, 2);  // D = 4
  moe::Mesh mesh(fsdp4, moe::make_world(fsdp4, where));
  const Trained whole = run(cfg, mesh, 1, 10, "", 5, where);
  const std::string step5 = ckpt_dir + "/step_5";
  REQUIRE(fs::exists(step5 + "/metadata.json"));

  SECTION("same layout: bit-identical") {
    const Trained resumed = run(cfg, mesh, 6, 10, ckpt_dir, -1, where);
    for (int64_t s = 6; s <= 10; ++s) CHECK(resumed.loss[s] == whole.loss[s]);
  }
  SECTION("tp = 2 x ep = 2 (D = 2, so twice the accumulation)") {
    const moe::Layout l = layout_of(1, 1, 2, 2);
    moe::Mesh other(l, moe::make_world(l, where));
    const Trained resumed = run(config(l, 4), other, 6, 10, step5, -1, where);
    for (int64_t s = 6; s <= 10; ++s) CHECK(std::abs(resumed.loss[s] - whole.loss[s]) <= 1e-5 * whole.loss[s]);
  }
  SECTION("one process (D = 1, eight micro-batches)") {
    moe::Mesh one(moe::Layout{}, moe::single_process_world());
    const Trained resumed = run(config(moe::Layout{}, 8), one, 6, 10, step5, -1, where);
    for (int64_t s = 6; s <= 10; ++s) CHECK(std::abs(resumed.loss[s] - whole.loss[s]) <= 1e-5 * whole.loss[s]);
  }
  if (where.device == moe::Device::kCuda) {
    SECTION("one CPU process continues the GPUs' checkpoint") {
      moe::Mesh one(moe::Layout{}, moe::single_process_world());
      const Trained resumed = run(config(moe::Layout{}, 8), one, 6, 10, step5, -1, moe::Placement{});
      for (int64_t s = 6; s <= 10; ++s) CHECK(std::abs(resumed.loss[s] - whole.loss[s]) <= 1e-5 * whole.loss[s]);
    }
  }
}

TEST_CASE("save under dp_shard = 4; resume under dp_shard = 4, tp = 2 x ep = 2 and one process") {
  check_resharding(moe::Placement{});
}

#if MOE_TRAIN_HAS_CUDA
TEST_CASE("on GPUs: save under dp_shard = 4; resume under dp_shard = 4, tp = 2 x ep = 2, one GPU and one CPU process",
          "[.gpu]") {
  check_resharding(moe::Placement{moe::Device::kCuda, moe::DType::kF32});
}
#endif

TEST_CASE("every expert survives a save under one layout and a load under another") {
  write_dataset();
  // Save untrained weights under ep = 2 x dp_shard = 2, load under ep = 4 and
  // under one process; each expert's w1/w2/w3 must equal the freshly
  // initialised (layout-independent) values of that expert.
  const moe::Layout from = layout_of(1, 2, 2, 1);
  moe::Mesh mesh(from, moe::mpi_world());
  {
    moe::StepRunner runner(config(from, 1), mesh);
    moe::save_checkpoint(config(from, 1), {0, 0}, runner.state_tensors(), mesh.world());
  }
  moe::Mesh one(moe::Layout{}, moe::single_process_world());
  moe::StepRunner reference(config(moe::Layout{}, 1), one);  // initialised, not loaded
  for (const moe::Layout& to : {layout_of(1, 1, 4, 1), moe::Layout{}}) {
    const bool single = to.world() == 1;
    moe::Mesh target(to, single ? moe::single_process_world() : moe::mpi_world());
    moe::StepRunner loaded(config(to, 1), target);
    // Scribble over the experts first so that only a correct load can restore them.
    for (moe::Param& p : loaded.params().all()) {
      if (p.spec.expert_parallel) moe::zero(p.shard);
    }
    moe::load_checkpoint(ckpt_dir + "/step_0", loaded.state_tensors());
    for (const moe::Param& p : loaded.params().all()) {
      if (!p.spec.expert_parallel) continue;
      const moe::Param& ref = reference.params()[p.spec.name];
      const int64_t per_expert = ref.value.numel() / ref.spec.shape[0];
      const int64_t first_expert = p.place.local_offset[0];
      for (int64_t e = 0; e < p.place.local_shape[0]; ++e) {
        INFO(p.spec.name << " expert " << first_expert + e << " under ep = " << to.ep);
        bool same = true;
        for (int64_t i = 0; i < per_expert; ++i) {
          same = same && p.shard.f32()[e * per_expert + i] == ref.value.f32()[(first_expert + e) * per_expert + i];
        }
        CHECK(same);
      }
    }
  }
}
