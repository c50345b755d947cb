// MFU's CPU peak is measured once per machine and read back after: two runs
// divide by the same figure. metrics.peak_tflops replaces it.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "src/train/cpu_peak.h"
#include "tests/test_support.h"

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

TEST_CASE("the CPU peak is measured once, kept in the cache folder, and read back") {
  const std::string dir = moe::test::fresh_dir("cpu_peak");
  setenv("MOE_TRAIN_CACHE", dir.c_str(), 1);
  const std::string path = moe::cpu_peak_cache_path();
  CHECK_THAT(path, StartsWith(dir + "/cpu_peak/"));
  const moe::CpuPeak first = moe::cpu_peak_flops();
  CHECK(first.flops > 1e8);  // any CPU of this century does 0.1 GFLOP/s
  CHECK_THAT(first.source, Contains("measured now, kept in " + path));
  const moe::CpuPeak second = moe::cpu_peak_flops();
  CHECK(second.flops == first.flops);  // bit for bit: the file's figure both times
  CHECK_THAT(second.source, Contains("measured before"));
  std::ifstream in(path);
  std::string word, cpu;
  double flops = 0;
  in >> word >> flops >> cpu;
  CHECK(word == "flops");
  CHECK(flops == first.flops);
  CHECK(cpu == "cpu");  // the facts it depends on follow
  unsetenv("MOE_TRAIN_CACHE");
}

TEST_CASE("metrics.peak_tflops is what MFU divides by") {
  const std::string dir = moe::test::fresh_dir("peak_tflops");
  // MFU / tokens_per_sec = FLOPs per token / peak: halving the peak doubles it.
  auto ratio = [&](const std::string& peak) {
    const std::string run = dir + "/run_" + peak;
    const auto r = moe::test::run_cli_captured(
        {"configs/train/debug_moe.toml", "--model.dim=32", "--model.n_layers=2", "--model.ffn_hidden_dim=64",
         "--train.seq_len=16", "--train.batch_size=2", "--train.max_steps=2", "--train.device=cpu",
         "--metrics.log_interval=1", "--metrics.peak_tflops=" + peak, "--checkpoint.dir=" + run});
    INFO(r.err);
    REQUIRE(r.code == 0);
    std::ifstream in(run + "/metrics.jsonl");
    std::string line;
    std::getline(in, line);
    const auto j = nlohmann::json::parse(line);
    return j["train/mfu"].get<double>() / j["train/tokens_per_sec"].get<double>();
  };
  const double at_2 = ratio("0.002"), at_1 = ratio("0.001");
  CHECK(at_1 == Approx(2 * at_2).epsilon(1e-9));
}
