// The Hugging Face import under multi-rank layouts, on 4 CPU ranks (under
// mpirun): a tiny Qwen2-MoE-shaped model (a dense block cut by tp, an MoE
// block cut by ep) exported from one process is imported by every rank of
// tp = 2 x ep = 2 and of dp_shard = 4 into runners initialised otherwise
// (init_std = 0.5); their losses then match, within 1e-5, those of one
// process that starts from the same weights by initialisation.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>

#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/data/batch_sampler.h"
#include "src/data/token_dataset.h"
#include "src/parallel/communicator.h"
#include "src/parallel/mesh.h"
#include "src/interop/export_hf.h"
#include "src/interop/import_hf.h"
#include "src/train/step_runner.h"
#include "tests/data/test_files.h"
#include "tests/parallel/layouts.h"
#include "tests/parallel/mpi_test_main.h"

using moe::test::test_world;

namespace fs = std::filesystem;

namespace {

std::string data_dir;

// `accum` keeps the global batch the same: accum x the layout's data-parallel degree = 4.
moe::JobConfig config(const moe::Layout& l, int64_t accum, const std::string& init_std) {
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
                                              "model.moe_frequency=2",
                                              "model.moe_router=softmax_topk",
                                              "model.init_std=" + init_std,
                                              "train.seq_len=8",
                                              "train.batch_size=2",
                                              "train.grad_accum_steps=" + std::to_string(accum),
                                              "train.max_steps=3",
                                              "train.mixed_precision=fp32",
                                              "optimizer.lr=0.003",
                                              "scheduler.warmup_steps=1",
                                              "data.dataset_path=" + data_dir})
                           .cfg;
  moe::test::set_layout(cfg.distributed, l);
  moe::validate_config(cfg);
  moe::fill_derived_defaults(cfg);
  return cfg;
}

// Losses of steps 1-3 (index 0 unused), after importing `hf` when given.
std::vector<double> run(const moe::JobConfig& cfg, moe::Mesh& mesh, const std::string& hf) {
  const moe::TokenDataset data = moe::TokenDataset::open(cfg.data.dataset_path, "*.npy", cfg.model.vocab_size);
  const moe::BatchSampler sampler(data, cfg.train.seq_len, cfg.train.batch_size, cfg.train.seed);
  moe::StepRunner runner(cfg, mesh);
  if (!hf.empty()) moe::import_hf(cfg.model, hf, runner.params());
  std::vector<double> loss(4, 0.0);
  for (int64_t s = 1; s <= 3; ++s) loss[static_cast<size_t>(s)] = runner.step(s, sampler).loss;
  return loss;
}

}  // namespace

TEST_CASE("import under tp = 2 x ep = 2 and dp_shard = 4 trains as one process from the same weights") {
  REQUIRE(test_world().size() == 4);
  std::vector<uint16_t> tokens(8192);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint16_t>((i * 5 + i / 7 + (i * i) % 3) % 64);
  data_dir = moe::test::fresh_dir("import_hf_data_rank" + std::to_string(test_world().rank()));
  moe::test::write_token_npy(data_dir + "/tokens.npy", tokens);
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string hf = std::string(tmp ? tmp : "/tmp") + "/import_hf_layout";
  const moe::JobConfig one_cfg = config(moe::Layout{}, 4, "0.02");
  if (test_world().rank() == 0) {
    fs::remove_all(hf);
    moe::TensorPool pool;
    moe::ParamStore whole(one_cfg.model, pool);
    whole.init(one_cfg.model, static_cast<uint64_t>(one_cfg.train.seed));
    moe::export_hf(one_cfg.model, whole, hf);
  }
  test_world().barrier();

  moe::Mesh one(moe::Layout{}, moe::single_process_world());
  const std::vector<double> want = run(one_cfg, one, "");
  CHECK(run(config(moe::Layout{}, 4, "0.5"), one, "")[1] != want[1]);  // init_std matters without the import

  for (const auto& [l, accum] : {std::make_pair(moe::test::layout_of(1, 1, 2, 2), int64_t{2}),
                                 std::make_pair(moe::test::layout_of(1, 4, 1, 1), int64_t{1})}) {
    INFO("dp_shard = " << l.dp_shard << ", ep = " << l.ep << ", tp = " << l.tp);
    moe::Mesh mesh(l, moe::mpi_world());
    const std::vector<double> got = run(config(l, accum, "0.5"), mesh, hf);
    for (int64_t s = 1; s <= 3; ++s) CHECK(std::abs(got[s] - want[s]) <= 1e-5 * want[s]);
  }
}
