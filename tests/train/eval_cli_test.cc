// `moe_train eval`: a checkpoint's loss on the validation data equals the
// evaluation the training run logged at that step; a named checkpoint, and
// the one-line refusals.
#include <catch2/catch.hpp>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "tests/cli_run.h"

using Catch::Matchers::Contains;

namespace {

using moe::test::fresh_dir;

moe::test::CliResult run(const std::vector<std::string>& args) { return moe::test::run_cli_reporting(args); }

double printed_loss(const std::string& out) {
  std::smatch m;
  REQUIRE(std::regex_search(out, m, std::regex("eval: loss ([0-9.]+), perplexity")));
  return std::stod(m[1]);
}

}  // namespace

TEST_CASE("eval of a checkpoint gives the loss training logged for it") {
  const std::string dir = fresh_dir("eval_cli");
  std::vector<std::string> prepare = {"prepare", "--output=" + dir + "/data", "--val-fraction=0.25"};
  for (int f = 0; f < 4; ++f) {
    prepare.push_back(dir + "/" + std::to_string(f) + ".txt");
    std::ofstream text(prepare.back());
    for (int i = 0; i < 120; ++i) text << "evaluate the checkpoint, not the run " << (i * (f + 1)) % 7 << "\n";
  }
  REQUIRE(run(prepare).code == 0);
  const std::vector<std::string> model = {"configs/train/debug_moe.toml",
                                          "--model.dim=32",
                                          "--model.n_layers=2",
                                          "--model.ffn_hidden_dim=64",
                                          "--model.vocab_size=257",
                                          "--train.seq_len=16",
                                          "--train.batch_size=2",
                                          "--train.device=cpu",
                                          "--data.dataset_path=" + dir + "/data/train",
                                          "--eval.dataset_path=" + dir + "/data/val",
                                          "--eval.steps=3",
                                          "--checkpoint.dir=" + dir + "/run"};
  REQUIRE(run(moe::test::with(model, {"--train.max_steps=8", "--eval.enabled=true", "--eval.interval=4",
                                      "--checkpoint.interval=4", "--checkpoint.keep_last_n=0"}))
              .code == 0);
  std::map<int64_t, double> logged;
  std::ifstream in(dir + "/run/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("eval/loss")) logged[j["step"].get<int64_t>()] = j["eval/loss"].get<double>();
  }
  REQUIRE(logged.size() == 2);

  // The latest checkpoint (step 8), then a named one (step 4).
  auto r = run(moe::test::with({"eval"}, model));
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains("checkpoint " + dir + "/run/step_8 (step 8)"));
  CHECK_THAT(r.out, Contains("over 3 batches (96 tokens)"));
  CHECK(printed_loss(r.out) == Approx(logged[8]).margin(1e-6));
  r = run(moe::test::with({"eval"}, moe::test::with(model, {"--checkpoint", dir + "/run/step_4"})));
  REQUIRE(r.code == 0);
  CHECK(printed_loss(r.out) == Approx(logged[4]).margin(1e-6));
  CHECK(printed_loss(r.out) != Approx(logged[8]).margin(1e-6));
}

TEST_CASE("eval: nothing to evaluate, or no validation data, is one line and exit 2") {
  const std::string dir = fresh_dir("eval_bad");
  auto r = moe::test::run_cli_captured(
      {"eval", "configs/train/debug_moe.toml", "--train.device=cpu", "--checkpoint.dir=" + dir + "/none"});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("holds no checkpoint to evaluate"));
  r = moe::test::run_cli_captured({"eval", "configs/train/debug_moe.toml", "--train.device=cpu",
                                   "--data.dataset_path=" + dir, "--checkpoint=" + dir});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("eval.dataset_path is empty: set it to the validation data of " + dir));
  r = moe::test::run_cli_captured({"eval"});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("no config file given"));
  r = moe::test::run_cli_captured({"eval", "configs/train/debug_moe.toml", "--steps=3"});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("unknown option --steps=3"));
}
