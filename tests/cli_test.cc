// The command line in-process: --print-config, --dry-run, overrides, options.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <sstream>

#include "src/cli.h"

using Catch::Matchers::Contains;

namespace {

struct Result {
  int code;
  std::string out, err;
};

Result run(std::vector<std::string> args) {
  std::ostringstream out, err;
  int code = moe::run_cli(args, out, err);
  return {code, out.str(), err.str()};
}

}  // namespace

TEST_CASE("--print-config prints the resolved config as JSON") {
  Result r = run({"configs/train/debug_moe.toml", "--print-config", "--optimizer.lr=1e-3", "--model.num_experts=8"});
  REQUIRE(r.code == 0);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j["model"]["dim"] == 256);
  CHECK(j["model"]["num_experts"] == 8);
  CHECK(j["optimizer"]["lr"] == 1e-3);
  CHECK(j["model"]["n_kv_heads"] == 2);
  CHECK(j["model"]["ffn_hidden_dim"] == 768);  // derived default filled in
  CHECK(j["distributed"]["dp_shard"] == -1);   // no world size given: left as asked
  CHECK(j["scheduler"]["decay_steps"].is_null());
}

TEST_CASE("--world-size resolves dp_shard = -1") {
  Result r = run({"configs/train/debug_moe.toml", "--print-config", "--world-size=8", "--distributed.ep=2"});
  REQUIRE(r.code == 0);
  CHECK(nlohmann::json::parse(r.out)["distributed"]["dp_shard"] == 4);
  Result bad = run({"configs/train/debug_moe.toml", "--print-config", "--world-size=0"});
  CHECK(bad.code == 2);
  CHECK_THAT(bad.err, Contains("--world-size=0"));
}

TEST_CASE("--dry-run prints the calculator's table") {
  Result r = run({"configs/train/moe_ep_32gpu.toml", "--dry-run"});
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains("layout: dp_replicate=1 dp_shard=4 cp=1 ep=2 tp=4 pp=1  (world size 32)"));
  CHECK_THAT(r.out, Contains("active per token"));
  CHECK_THAT(r.out, Contains("FLOPs per token"));
  CHECK_THAT(r.out, Contains("AdamW moments"));
  CHECK_THAT(r.out, Contains("routed-expert share of total"));
}

TEST_CASE("command-line mistakes exit 2 with one line") {
  Result none = run({});
  CHECK(none.code == 2);
  CHECK_THAT(none.err, Contains("no config file given"));
  Result typo = run({"configs/train/debug_moe.toml", "--dryrun"});
  CHECK(typo.code == 2);
  CHECK_THAT(typo.err, Contains("did you mean --dry-run?"));
  Result two = run({"a.toml", "b.toml"});
  CHECK(two.code == 2);
  CHECK_THAT(two.err, Contains("unexpected argument b.toml"));
  Result missing = run({"configs/train/nope.toml", "--dry-run"});
  CHECK(missing.code == 2);
  CHECK_THAT(missing.err, Contains("config file configs/train/nope.toml: cannot be opened"));
}

TEST_CASE("--help prints usage") {
  Result r = run({"--help"});
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Contains("usage: moe_train CONFIG.toml"));
}
