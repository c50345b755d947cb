// TensorBoard event files: the framing and messages round-trip through an
// independent reader, and a training run with KempnerForge's
// enable_tensorboard writes the JSONL file's tags, per-layer MoE figures and
// each layer's expert-load histogram.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "src/core/crc32.h"
#include "src/train/tensorboard_events.h"
#include "tests/test_support.h"
#include "tests/train/tensorboard_reader.h"

namespace {

using moe::test::fresh_dir;
using moe::test::read_event_file;

int run(const std::vector<std::string>& args) {
  const auto r = moe::test::run_cli_captured(args);
  INFO(r.err);
  return r.code;
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

const std::vector<std::string> kTinyMoE = {
    "configs/train/debug_moe.toml", "--model.dim=32",           "--model.n_layers=4",       "--model.ffn_hidden_dim=64",
    "--model.vocab_size=257",       "--train.seq_len=16",       "--train.batch_size=2",     "--train.max_steps=6",
    "--train.device=cpu",           "--metrics.log_interval=2", "--checkpoint.interval=100"};

}  // namespace

TEST_CASE("CRC-32C is Castagnoli's") {
  CHECK(moe::crc32c_update(0, "123456789", 9) == 0xE3069283u);  // the standard check value
  CHECK(moe::crc32_update(0, "123456789", 9) == 0xCBF43926u);
}

TEST_CASE("event records round-trip, and a damaged byte is caught") {
  const std::string dir = fresh_dir("tb_roundtrip");
  std::string path;
  {
    moe::TensorBoardWriter w(dir + "/tb");
    path = w.path();
    w.write(7, {{"train/loss", 2.5}, {"train/lr", 1e-3}}, {{"moe/layer_3/expert_load", {4, 0, 6}}});
    w.write(8, {{"eval/loss", -0.125}});
  }
  CHECK(std::filesystem::path(path).filename().string().rfind("events.out.tfevents.", 0) == 0);
  const auto events = read_event_file(path);
  REQUIRE(events.size() == 3);
  CHECK(events[0].file_version == "brain.Event:2");
  CHECK(events[0].wall_time > 1.7e9);
  CHECK(events[1].step == 7);
  CHECK(events[1].scalars.at("train/loss") == 2.5f);
  CHECK(events[1].scalars.at("train/lr") == 1e-3f);
  const auto& h = events[1].histograms.at("moe/layer_3/expert_load");
  CHECK(h.buckets == std::vector<double>{4, 0, 6});
  CHECK(h.limits == std::vector<double>{0.5, 1.5, 2.5});
  CHECK(h.min == -0.5);
  CHECK(h.max == 2.5);
  CHECK(h.num == 10);
  CHECK(h.sum == 12);          // 0*4 + 1*0 + 2*6
  CHECK(h.sum_squares == 24);  // 0 + 0 + 4*6
  CHECK(events[2].step == 8);
  CHECK(events[2].scalars.at("eval/loss") == -0.125f);

  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  bytes[bytes.size() - 6] ^= 1;
  std::ofstream(dir + "/bad", std::ios::binary) << bytes;
  CHECK_THROWS_WITH(read_event_file(dir + "/bad"), "bad data CRC");
}

TEST_CASE("a run with enable_tensorboard writes the JSONL's tags, per-layer MoE figures and expert loads") {
  const std::string dir = fresh_dir("tb_train");
  REQUIRE(
      run(moe::test::with(kTinyMoE, {"--metrics.enable_tensorboard=true", "--metrics.tensorboard_dir=" + dir + "/tb",
                                     "--checkpoint.dir=" + dir + "/run"})) == 0);
  // Metrics are on by default: metrics.jsonl in the run's folder (checkpoint.dir).
  const auto jsonl = read_jsonl(dir + "/run/metrics.jsonl");
  REQUIRE(jsonl.size() == 4);  // steps 1, 2, 4, 6
  const auto events = read_event_file(moe::test::only_event_file(dir + "/tb"));
  REQUIRE(events.size() == 1 + jsonl.size());
  for (size_t i = 0; i < jsonl.size(); ++i) {
    const nlohmann::json& j = jsonl[i];
    const moe::test::ReadEvent& e = events[i + 1];
    INFO("step " << j["step"]);
    CHECK(e.step == j["step"].get<int64_t>());
    size_t scalars = 0;
    for (const auto& [tag, value] : j.items()) {
      if (tag == "step" || !value.is_number()) continue;
      ++scalars;
      INFO(tag);
      REQUIRE(e.scalars.count(tag) == 1);
      CHECK(e.scalars.at(tag) == static_cast<float>(value.get<double>()));
    }
    CHECK(e.scalars.size() == scalars);  // the same tags, no others
    // moe_frequency = 2 over 4 blocks: MoE in blocks 1 and 3.
    for (int layer : {1, 3}) {
      const std::string tag = "moe/layer_" + std::to_string(layer);
      for (const char* figure : {"/aux_loss", "/expert_balance", "/dropped_frac"}) {
        CHECK(e.scalars.count(tag + figure) == 1);
      }
      const auto counts = j[tag + "/expert_counts"].get<std::vector<double>>();
      CHECK(e.histograms.at(tag + "/expert_load").buckets == counts);
    }
    CHECK(j["moe/expert_counts"].size() == 2);
  }
  CHECK(events.back().scalars.at("moe/layer_1/expert_balance") <= 1.0f);
}

TEST_CASE("a TensorBoard folder that cannot be written is one line and exit 2") {
  const std::string dir = fresh_dir("tb_bad");
  std::ofstream(dir + "/a_file") << "not a folder";
  const auto r = moe::test::run_cli_captured(moe::test::with(
      kTinyMoE, {"--train.max_steps=1", "--metrics.enable_tensorboard=true",
                 "--metrics.tensorboard_dir=" + dir + "/a_file/tb", "--checkpoint.dir=" + dir + "/run"}));
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Matchers::Contains("metrics.tensorboard_dir = \"" + dir +
                                              "/a_file/tb\": cannot create an "
                                              "event file there"));
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

TEST_CASE("metrics.enable_jsonl = false writes no metrics file") {
  const std::string dir = fresh_dir("tb_off");
  REQUIRE(run(moe::test::with(kTinyMoE, {"--train.max_steps=1", "--metrics.enable_jsonl=false",
                                         "--checkpoint.dir=" + dir + "/run"})) == 0);
  CHECK(std::filesystem::exists(dir + "/run/step_1"));
  CHECK_FALSE(std::filesystem::exists(dir + "/run/metrics.jsonl"));
  CHECK_FALSE(std::filesystem::exists("tb_logs"));
}
