// `moe_train plot`: a real run's metrics drawn into a PNG of the expected
// size, with the heatmap over every MoE layer; bad input is one line, exit 2.
#include <catch2/catch.hpp>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>

#include "tests/cli_run.h"

using Catch::Matchers::Contains;

namespace {

using moe::test::fresh_dir;

moe::test::CliResult run(const std::vector<std::string>& args) { return moe::test::run_cli_reporting(args); }

// A PNG's width and height from its IHDR chunk; {0, 0} if it is not a PNG.
std::pair<uint32_t, uint32_t> png_size(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (b.size() < 24 || b.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0 || b.compare(12, 4, "IHDR") != 0) return {0, 0};
  auto be32 = [&](size_t at) {
    uint32_t v = 0;
    for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
    return v;
  };
  return {be32(16), be32(20)};
}

std::vector<std::string> tiny(const std::string& config, const std::string& dir) {
  return {config,
          "--model.dim=32",
          "--model.n_layers=4",
          "--model.ffn_hidden_dim=64",
          "--model.vocab_size=257",
          "--train.seq_len=16",
          "--train.batch_size=2",
          "--train.max_steps=6",
          "--train.device=cpu",
          "--metrics.log_interval=1",
          "--data.dataset_path=" + dir + "/data/train",
          "--checkpoint.dir=" + dir + "/run"};
}

}  // namespace

TEST_CASE("plot draws a MoE run's curves and every layer's expert load") {
  const std::string dir = fresh_dir("plot_moe");
  std::vector<std::string> prepare = {"prepare", "--output=" + dir + "/data", "--val-fraction=0.2"};
  for (int f = 0; f < 5; ++f) {  // five documents: the last one is the validation split
    prepare.push_back(dir + "/" + std::to_string(f) + ".txt");
    std::ofstream text(prepare.back());
    for (int i = 0; i < 100; ++i) text << "a plot of the loss, the rate and the load " << (i + f) % 5 << "\n";
  }
  REQUIRE(run(prepare).code == 0);
  REQUIRE(run(moe::test::with(tiny("configs/train/debug_moe.toml", dir),
                              {"--eval.enabled=true", "--eval.dataset_path=" + dir + "/data/val", "--eval.interval=3",
                               "--eval.steps=1"}))
              .code == 0);
  const auto r = run({"plot", dir + "/run"});
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains("wrote " + dir + "/run/metrics.png"));
  CHECK_THAT(r.out, Contains("6 logged steps to step 6"));
  CHECK_THAT(r.out, Contains("(2 evaluations)"));
  CHECK_THAT(r.out, Contains("expert load of 2 MoE layers (8 experts in all)"));  // blocks 1 and 3, 4 experts each
  CHECK(png_size(dir + "/run/metrics.png") == std::make_pair(1400u, 1100u));

  // --output, and the JSONL file named directly.
  REQUIRE(run({"plot", dir + "/run/metrics.jsonl", "--output", dir + "/other.png"}).code == 0);
  CHECK(png_size(dir + "/other.png") == std::make_pair(1400u, 1100u));
}

TEST_CASE("plot of a dense run has no heatmap, and says so") {
  const std::string dir = fresh_dir("plot_dense");
  {
    std::ofstream text(dir + "/a.txt");
    for (int i = 0; i < 300; ++i) text << "dense models route nothing " << i % 3 << "\n";
  }
  REQUIRE(run({"prepare", "--output=" + dir + "/data", dir + "/a.txt"}).code == 0);
  REQUIRE(run(tiny("configs/train/debug_dense.toml", dir)).code == 0);
  const auto r = run({"plot", dir + "/run"});
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains("no expert load (a dense model)"));
  CHECK(png_size(dir + "/run/metrics.png").first == 1400u);
}

TEST_CASE("plot: bad input is one line and exit 2") {
  const std::string dir = fresh_dir("plot_bad");
  auto fails_with = [](const std::vector<std::string>& args, const std::string& words) {
    const auto r = moe::test::run_cli_captured(args);
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Contains(words));
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  };
  fails_with({"plot", dir + "/missing"}, "does not exist");
  fails_with({"plot", dir}, "holds no metrics.jsonl");
  fails_with({"plot"}, "give a run's folder");
  std::ofstream(dir + "/eval_only.jsonl") << "{\"step\": 1, \"eval/loss\": 2.0}\n";
  fails_with({"plot", dir + "/eval_only.jsonl"}, "no training steps logged yet");
  std::ofstream(dir + "/broken.jsonl") << "{\"step\": 1, \"train/loss\": 2.0}\nnot json\n";
  fails_with({"plot", dir + "/broken.jsonl"}, "broken.jsonl:2: not a JSON object");
  fails_with({"plot", dir + "/broken.jsonl", "--colour=red"}, "unknown option --colour=red");
}
