// --init-from-hf through the command line: a run started from exported
// weights computes the same losses, bit for bit, as the run whose weights
// they are (whatever this run's own initialisation), a resumed checkpoint
// wins over the flag, and --export-hf writes imported weights back unchanged.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>

#include "tests/data/test_files.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;

using moe::test::logged_losses;
using moe::test::with;

namespace {

int run(const std::vector<std::string>& args) {
  const auto r = moe::test::run_cli_captured(args);
  INFO(r.err);
  return r.code;
}

// A structured token stream and a tiny Qwen2-MoE-shaped model (debug_moe.toml: MoE every other block).
std::vector<std::string> tiny_args(const std::string& dir) {
  const std::string data = dir + "/data";
  fs::create_directories(data);
  std::vector<uint16_t> tokens(8192);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint16_t>((i * 7 + i / 11) % 61);
  moe::test::write_token_npy(data + "/tokens.npy", tokens);
  return {"configs/train/debug_moe.toml", "--model.dim=32",
          "--model.n_layers=2",           "--model.ffn_hidden_dim=64",
          "--model.vocab_size=64",        "--train.seq_len=16",
          "--train.batch_size=2",         "--scheduler.warmup_steps=2",
          "--metrics.log_interval=1",     "--data.dataset_path=" + data};
}

std::string bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("--init-from-hf starts from the checkpoint's weights; a resumed checkpoint wins") {
  const std::string dir = moe::test::fresh_dir("init_from_hf");
  const auto base = tiny_args(dir);
  auto training = [&](const std::string& name, int steps, const std::string& resume) {
    return with(base, {"--train.max_steps=" + std::to_string(steps), "--checkpoint.dir=" + dir + "/" + name,
                       "--checkpoint.resume=" + resume, "--metrics.jsonl_path=" + dir + "/" + name + ".jsonl"});
  };
  // The initial weights of the default init_std, as a Hugging Face folder.
  REQUIRE(run(with(base, {"--checkpoint.dir=" + dir + "/none", "--export-hf=" + dir + "/hf"})) == 0);
  REQUIRE(fs::exists(dir + "/hf/model.safetensors"));

  // a: those weights by initialisation. b: another initialisation, replaced by the import.
  REQUIRE(run(training("a", 3, "never")) == 0);
  REQUIRE(run(with(training("b", 3, "never"), {"--model.init_std=0.5", "--init-from-hf=" + dir + "/hf"})) == 0);
  REQUIRE(run(with(training("c", 1, "never"), {"--model.init_std=0.5"})) == 0);
  const auto a = logged_losses(dir + "/a.jsonl"), b = logged_losses(dir + "/b.jsonl"),
             c = logged_losses(dir + "/c.jsonl");
  REQUIRE(a.size() == 3);
  CHECK(b == a);
  CHECK(c.at(1) != a.at(1));  // without the import, init_std = 0.5 is another model

  // Resuming b's checkpoint: the flag is not used (its folder is not even read) and b continues as a does.
  REQUIRE(run(training("a", 5, "auto")) == 0);
  REQUIRE(run(with(training("b", 5, "auto"), {"--model.init_std=0.5", "--init-from-hf=" + dir + "/missing"})) == 0);
  const auto a2 = logged_losses(dir + "/a.jsonl"), b2 = logged_losses(dir + "/b.jsonl");
  REQUIRE(a2.size() == 5);
  CHECK(b2 == a2);

  // --export-hf with --init-from-hf (and no checkpoint) writes the imported weights out again, byte for byte.
  REQUIRE(run(with(base, {"--model.init_std=0.5", "--checkpoint.dir=" + dir + "/none", "--init-from-hf=" + dir + "/hf",
                          "--export-hf=" + dir + "/hf2"})) == 0);
  CHECK(bytes(dir + "/hf2/model.safetensors") == bytes(dir + "/hf/model.safetensors"));

  // From scratch, a mismatched folder is one line and exit 2.
  const auto r =
      moe::test::run_cli_captured(with(training("d", 1, "never"), {"--model.dim=48", "--init-from-hf=" + dir + "/hf"}));
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("config.json: hidden_size = 32, this model's is 48 (model.dim)"));
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

TEST_CASE("--init-from-hf is in the usage text and parsed") {
  const auto r = moe::test::run_cli_captured({"--help"});
  CHECK_THAT(r.out, Catch::Contains("--init-from-hf=DIR"));
  CHECK(moe::parse_command_line({"x.toml", "--init-from-hf=some/dir"}).init_from_hf_dir == "some/dir");
  CHECK_THROWS_WITH(moe::parse_command_line({"x.toml", "--init-from-h=d"}), Catch::Contains("--init-from-hf"));
}
