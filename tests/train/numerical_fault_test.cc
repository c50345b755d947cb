// Numerical faults: a NaN gradient (the test hook MOE_TRAIN_INJECT_NAN_AT_STEP)
// is skipped under nan_policy = "skip" — the update is not applied and the
// step is logged as skipped — and ends the run under "abort", or after
// max_skipped skips in a row, with exit code 3, the step in the message, and
// no checkpoint of a bad state.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/data/batch_sampler.h"
#include "src/data/token_dataset.h"
#include "src/parallel/mesh.h"
#include "src/checkpoint/checkpoint.h"
#include "src/train/step_runner.h"
#include "tests/data/test_files.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;

namespace {

std::string dataset(const std::string& dir) {
  const std::string data = dir + "/data";
  fs::create_directories(data);
  std::vector<uint16_t> tokens(4096);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint16_t>((i * 3 + i / 5) % 61);
  moe::test::write_token_npy(data + "/tokens.npy", tokens);
  return data;
}

std::vector<std::string> args(const std::string& dir, const std::vector<std::string>& more) {
  return moe::test::with(
      {"configs/train/debug_moe.toml", "--model.dim=32", "--model.n_layers=2", "--model.ffn_hidden_dim=64",
       "--model.vocab_size=64", "--train.seq_len=16", "--train.batch_size=2", "--train.max_steps=6",
       "--metrics.log_interval=1", "--checkpoint.interval=2", "--data.dataset_path=" + dataset(dir),
       "--checkpoint.dir=" + dir + "/ckpt", "--metrics.jsonl_path=" + dir + "/m.jsonl"},
      more);
}

moe::test::CliResult run_with_nan_at(int step, const std::vector<std::string>& a) {
  setenv("MOE_TRAIN_INJECT_NAN_AT_STEP", std::to_string(step).c_str(), 1);
  const moe::test::CliResult r = moe::test::run_cli_captured(a);
  unsetenv("MOE_TRAIN_INJECT_NAN_AT_STEP");
  return r;
}

}  // namespace

TEST_CASE("skip: the step is logged as skipped and training goes on") {
  const std::string dir = moe::test::fresh_dir("nan_skip");
  const auto r = run_with_nan_at(3, args(dir, {}));
  INFO(r.err);
  REQUIRE(r.code == 0);
  std::ifstream in(dir + "/m.jsonl");
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    const auto j = nlohmann::json::parse(line);
    CHECK(j.value("train/skipped", false) == (j["step"] == 3));
    if (j["step"] != 3) CHECK(std::isfinite(j["train/grad_norm"].get<double>()));
  }
  CHECK(lines == 6);
  CHECK(moe::latest_checkpoint(dir + "/ckpt") == dir + "/ckpt/step_6");
}

TEST_CASE("skip leaves parameters, moments and router biases as they were") {
  const std::string dir = moe::test::fresh_dir("nan_state");
  moe::JobConfig cfg =
      moe::load_config_text(
          "", "tiny",
          {"model.dim=32", "model.n_layers=2", "model.n_heads=4", "model.vocab_size=64", "model.num_experts=4",
           "model.moe_top_k=2", "model.moe_frequency=1", "model.moe_router=sigmoid_topk", "train.seq_len=16",
           "train.batch_size=2", "train.max_steps=6", "data.dataset_path=" + dataset(dir)})
          .cfg;
  moe::validate_config(cfg);
  moe::fill_derived_defaults(cfg);
  moe::Mesh mesh(moe::Layout{}, moe::single_process_world());
  const moe::TokenDataset data = moe::TokenDataset::open(cfg.data.dataset_path, "*.npy", 64);
  const moe::BatchSampler sampler(data, 16, 2, cfg.train.seed);
  moe::StepRunner runner(cfg, mesh);
  runner.inject_nan_gradient_at(3);
  auto snapshot = [&] {
    std::vector<float> all;
    for (const moe::StateTensor& s : runner.state_tensors()) {
      all.insert(all.end(), s.piece.f32(), s.piece.f32() + s.piece.numel());
    }
    return all;
  };
  runner.step(1, sampler);
  runner.step(2, sampler);
  const std::vector<float> before = snapshot();
  const moe::StepMetrics m = runner.step(3, sampler);
  CHECK(m.skipped);
  CHECK(snapshot() == before);
  CHECK(!runner.step(4, sampler).skipped);
  CHECK(snapshot() != before);
}

TEST_CASE("abort: exit code 3 naming the step, and nothing saved after the fault") {
  const std::string dir = moe::test::fresh_dir("nan_abort");
  const auto r = run_with_nan_at(3, args(dir, {"--train.nan_policy=abort"}));
  CHECK(r.code == 3);
  CHECK_THAT(r.err, Catch::Contains("step 3: non-finite"));
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(moe::latest_checkpoint(dir + "/ckpt") == dir + "/ckpt/step_2");
  CHECK(!fs::exists(dir + "/ckpt/step_4"));
}

TEST_CASE("skip aborts after max_skipped skips in a row") {
  const std::string dir = moe::test::fresh_dir("nan_max");
  const auto r = run_with_nan_at(3, args(dir, {"--train.max_skipped=0"}));
  CHECK(r.code == 3);
  CHECK_THAT(r.err, Catch::Contains("more than train.max_skipped = 0"));
}
