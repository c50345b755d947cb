// Training end to end through the command line, on a tiny model and a text
// dataset prepared by `moe_train prepare`: the loss falls, and the metrics file
// carries the names users chart.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "tests/test_support.h"

namespace {

using moe::test::fresh_dir;

int run(const std::vector<std::string>& args) {
  const auto r = moe::test::run_cli_captured(args);
  INFO(r.err);
  return r.code;
}

}  // namespace

TEST_CASE("prepare text, train a tiny MoE, read the metrics") {
  const std::string dir = fresh_dir("train_cli");
  {
    std::ofstream text(dir + "/a.txt");
    for (int i = 0; i < 400; ++i) text << "the quick brown fox jumps over the lazy dog " << i % 7 << "\n";
    std::ofstream other(dir + "/b.txt");
    for (int i = 0; i < 50; ++i) other << "pack my box with five dozen liquor jugs\n";
  }
  REQUIRE(run({"prepare", "--output=" + dir + "/data", dir + "/a.txt", dir + "/b.txt"}) == 0);

  const std::string metrics = dir + "/runs/m.jsonl";
  REQUIRE(run({"configs/train/debug_moe.toml", "--model.dim=32", "--model.n_layers=2", "--model.ffn_hidden_dim=64",
               "--model.vocab_size=257", "--train.seq_len=32", "--train.batch_size=4", "--train.max_steps=60",
               "--train.grad_accum_steps=2", "--scheduler.warmup_steps=3", "--optimizer.lr=1e-2",
               "--metrics.log_interval=5", "--data.dataset_path=" + dir + "/data/train", "--eval.enabled=true",
               "--eval.dataset_path=" + dir + "/data/val", "--eval.interval=30", "--eval.steps=2",
               "--metrics.jsonl_path=" + metrics, "--checkpoint.dir=" + dir + "/ckpt"}) == 0);

  std::ifstream in(metrics);
  std::vector<nlohmann::json> train, eval;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    (j.contains("train/loss") ? train : eval).push_back(j);
  }
  REQUIRE(train.size() == 13);  // step 1 and every 5th
  REQUIRE(eval.size() == 2);
  CHECK(train.front()["step"] == 1);
  CHECK(train.back()["step"] == 60);
  for (const char* key :
       {"train/lr", "train/grad_norm", "train/tokens_per_sec", "train/mfu", "train/step_time_sec", "mem/peak_bytes",
        "moe/aux_loss", "moe/router_z_loss", "moe/expert_balance", "moe/dropped_frac", "moe/expert_counts"}) {
    CHECK(train.back().contains(key));
  }
  // One MoE block of the two (moe_frequency = 2); its 4 experts counted 2 slots x 4 x 32 tokens x 2 micro-batches.
  const auto counts = train.back()["moe/expert_counts"];
  REQUIRE(counts.size() == 1);
  int64_t total = 0;
  for (const auto& c : counts[0]) total += c.get<int64_t>();
  CHECK(total == 2 * 4 * 32 * 2);
  CHECK(train.back()["train/loss"].get<double>() < 0.6 * train.front()["train/loss"].get<double>());
  CHECK(eval.back().contains("eval/perplexity"));
}

TEST_CASE("debug_moe trains with expert_choice: balance 1, nothing dropped, falling loss; then generates") {
  const std::string dir = fresh_dir("train_cli_expert_choice");
  {
    std::ofstream text(dir + "/a.txt");
    for (int i = 0; i < 400; ++i) text << "the quick brown fox jumps over the lazy dog " << i % 7 << "\n";
  }
  REQUIRE(run({"prepare", "--output=" + dir + "/data", dir + "/a.txt"}) == 0);
  const std::string metrics = dir + "/m.jsonl";
  const std::vector<std::string> model = {"configs/train/debug_moe.toml",
                                          "--model.dim=32",
                                          "--model.n_layers=2",
                                          "--model.ffn_hidden_dim=64",
                                          "--model.vocab_size=257",
                                          "--model.moe_router=expert_choice",
                                          "--model.moe_capacity_factor=1.0",
                                          "--train.seq_len=32",
                                          "--train.batch_size=4",
                                          "--train.device=cpu",
                                          "--checkpoint.dir=" + dir + "/ckpt"};
  std::vector<std::string> train = model;
  for (const std::string o :
       {"--train.max_steps=40", "--optimizer.lr=1e-2", "--scheduler.warmup_steps=3", "--metrics.log_interval=1"})
    train.push_back(o);
  train.push_back("--data.dataset_path=" + dir + "/data/train");
  train.push_back("--metrics.jsonl_path=" + metrics);
  REQUIRE(run(train) == 0);
  std::ifstream in(metrics);
  std::vector<nlohmann::json> steps;
  for (std::string line; std::getline(in, line);) steps.push_back(nlohmann::json::parse(line));
  REQUIRE(steps.size() == 40);
  for (const auto& j : steps) {
    CHECK(j["moe/expert_balance"].get<double>() == 1.0);
    CHECK(j["moe/dropped_frac"].get<double>() == 0.0);
  }
  // Each of the 4 experts takes ceil(1.0 x 128 tokens x 2 / 4) = 64 tokens of the micro-batch.
  for (const auto& c : steps.back()["moe/expert_counts"][0]) CHECK(c.get<int64_t>() == 64);
  CHECK(steps.back()["train/loss"].get<double>() < 0.6 * steps.front()["train/loss"].get<double>());

  std::vector<std::string> generate = {"generate"};
  generate.insert(generate.end(), model.begin(), model.end());
  for (const std::string o : {"--prompt=the quick", "--max-new-tokens=12", "--temperature=0"}) generate.push_back(o);
  const auto sampled = moe::test::run_cli_captured(generate);
  INFO(sampled.err);
  REQUIRE(sampled.code == 0);
  CHECK(sampled.out.rfind("the quick", 0) == 0);
}

TEST_CASE("bad data is one line and exit 2") {
  const std::string dir = fresh_dir("bad_data");
  CHECK(run({"configs/train/debug_moe.toml", "--data.dataset_path=" + dir}) == 2);  // no *.npy in it
  CHECK(run({"configs/train/debug_moe.toml", "--data.dataset_path=" + dir + "/missing"}) == 2);
}

TEST_CASE("debug_dense trains in fp8 with falling loss, close to the same run without fp8") {
  const std::string dir = fresh_dir("train_cli_fp8");
  {
    std::ofstream text(dir + "/a.txt");
    for (int i = 0; i < 400; ++i) text << "sphinx of black quartz, judge my vow " << i % 11 << "\n";
  }
  REQUIRE(run({"prepare", "--output=" + dir + "/data", dir + "/a.txt"}) == 0);
  std::map<std::string, std::vector<double>> losses;
  for (const std::string precision : {"fp32", "fp8"}) {
    const std::string metrics = dir + "/" + precision + ".jsonl";
    const auto r = moe::test::run_cli_captured(
        {"configs/train/debug_dense.toml", "--train.mixed_precision=" + precision, "--train.device=cpu",
         "--train.seq_len=64", "--train.max_steps=40", "--metrics.log_interval=1",
         "--data.dataset_path=" + dir + "/data/train", "--metrics.jsonl_path=" + metrics,
         "--checkpoint.dir=" + dir + "/ckpt_" + precision});
    INFO(r.err);
    REQUIRE(r.code == 0);
    std::ifstream in(metrics);
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line);
      if (j.contains("train/loss")) losses[precision].push_back(j["train/loss"].get<double>());
    }
    REQUIRE(losses[precision].size() == 40);
  }
  const std::vector<double>&fp8 = losses["fp8"], &fp32 = losses["fp32"];
  CHECK(fp8.back() < 0.6 * fp8.front());
  // FP8 rounds the GEMMs' operands, not the weights: a curve of its own that
  // stays near fp32's (within 5% of the starting loss at every step).
  CHECK(fp8 != fp32);
  double farthest = 0;
  for (size_t i = 0; i < fp8.size(); ++i) farthest = std::max(farthest, std::fabs(fp8[i] - fp32[i]));
  CHECK(farthest < 0.05 * fp32.front());
  CHECK(farthest > 0);
  // --dry-run says which GEMMs run in FP8.
  const auto dry = moe::test::run_cli_captured(
      {"configs/train/debug_dense.toml", "--train.mixed_precision=fp8", "--train.device=cpu", "--dry-run"});
  CHECK(dry.code == 0);
  CHECK(dry.out.find("dense GEMMs in fp8") != std::string::npos);
}
