// The command line in-process: --print-config, --dry-run, overrides, options.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <regex>
#include <string>

#include "src/core/build_info.h"
#include "src/core/cuda_device.h"
#include "tests/test_support.h"

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using Result = moe::test::CliResult;

namespace {

Result run(const std::vector<std::string>& args) { return moe::test::run_cli_captured(args); }

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

TEST_CASE("--key value means --key=value, for overrides and valued options") {
  Result r = run({"configs/train/debug_moe.toml", "--print-config", "--optimizer.lr", "-1e-3", "--world-size", "8",
                  "--distributed.ep", "2", "--metrics.tensorboard_dir", "tb/run 1"});
  // -1e-3 is the value, not an option: the config is then refused for it.
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("optimizer.lr = -0.001"));
  r = run({"configs/train/debug_moe.toml", "--print-config", "--optimizer.lr", "1e-3", "--world-size", "8",
           "--distributed.ep", "2", "--metrics.enable_tensorboard", "true", "--metrics.tensorboard_dir", "tb/run 1"});
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["optimizer"]["lr"] == 1e-3);
  CHECK(j["distributed"]["dp_shard"] == 4);
  CHECK(j["metrics"]["enable_tensorboard"] == true);
  CHECK(j["metrics"]["tensorboard_dir"] == "tb/run 1");
  // A flag takes no value: the next argument stays what it is.
  CHECK(moe::parse_command_line({"--dry-run", "x.toml"}).config_path == "x.toml");
  // KempnerForge's W&B keys are accepted on the command line, as in the file.
  CHECK(run({"configs/train/debug_moe.toml", "--print-config", "--metrics.wandb_project=p",
             "--metrics.enable_wandb=true"})
            .code == 0);
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

TEST_CASE("--dry-run --world-size plans each collective's bytes and time, and the compute beside them") {
  Result r = run({"configs/train/moe_ep_32gpu.toml", "--dry-run", "--world-size", "32"});
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains("network: 4 ranks per node"));  // the config's gpus_per_node
  // tp = 4 fills a node of 4; ep and dp_shard are outer axes, so they cross nodes. Its full
  // activation checkpointing runs the forward's all-reduces and all-to-alls again.
  CHECK(std::regex_search(r.out, std::regex("TP all-reduce of the activations +tp +4 ranks in a node +72 launches")));
  CHECK(std::regex_search(r.out,
                          std::regex("EP all-to-all of the routed tokens +ep +2 ranks across nodes +192 launches")));
  CHECK(std::regex_search(r.out, std::regex("FSDP all-gather of the weights +dp_shard +4 ranks across nodes")));
  CHECK_THAT(r.out, Contains("FSDP reduce-scatter of the gradients"));
  CHECK_THAT(r.out, Contains("all-reduce of the other gradients"));
  CHECK(std::regex_search(r.out, std::regex("total +[0-9.]+ GiB +[0-9.]+ ms")));
  CHECK_THAT(r.out, Contains("at 40% MFU of 989 TFLOP/s"));
  // A faster network shortens the time; one rank has nothing to plan.
  Result fast = run({"configs/train/moe_ep_32gpu.toml", "--dry-run", "--world-size=32",
                     "--distributed.inter_node_gb_s=450", "--metrics.planned_mfu=0.5"});
  REQUIRE(fast.code == 0);
  CHECK_THAT(fast.out, Contains("at 50% MFU"));
  std::smatch a, b;
  REQUIRE(std::regex_search(r.out, a, std::regex("total +[0-9.]+ GiB +([0-9.]+) ms")));
  REQUIRE(std::regex_search(fast.out, b, std::regex("total +[0-9.]+ GiB +([0-9.]+) ms")));
  CHECK(std::stod(b[1]) < std::stod(a[1]));
  Result one = run({"configs/train/debug_moe.toml", "--dry-run", "--train.device=cpu", "--world-size=1"});
  REQUIRE(one.code == 0);
  CHECK_THAT(one.out, Contains("communication per step and rank: none"));
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

TEST_CASE("prepare without an output or inputs exits 2 with one line") {
  Result r = run({"prepare", "some.txt"});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Contains("prepare: needs --output=DIR"));
  Result bad = run({"prepare", "--output=x", "--val-fraction=2", "a.txt"});
  CHECK(bad.code == 2);
  CHECK_THAT(bad.err, Contains("--val-fraction=2: must be a number in [0, 1)"));
}

TEST_CASE("--version prints the version, the commit and the CUDA libraries") {
  Result r = run({"--version"});
  CHECK(r.code == 0);
  CHECK_THAT(r.out, StartsWith(std::string("moe_train ") + moe::moe_train_version() + "\n"));
  CHECK_THAT(r.out, Contains(std::string("\ncommit ") + moe::build_commit() + "\n"));
  // 40 hex digits (+dirty for a build with uncommitted changes), "unknown" outside a git checkout.
  CHECK(std::regex_match(std::string(moe::build_commit()), std::regex("[0-9a-f]{40}(\\+dirty)?|unknown")));
  CHECK_THAT(r.out, Contains("\ncuda_built "));
}

TEST_CASE("check-gpu refuses what training refuses, with the same line, before looking for a GPU") {
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--train.mixed_precision=fp8", "--train.seq_len=101"},
        {"--model.moe_top_k=9"},
        {"--distributed.tp=3"}}) {
    std::vector<std::string> train_args = {"configs/train/debug_moe.toml"}, check_args = {"check-gpu"};
    train_args.insert(train_args.end(), bad.begin(), bad.end());
    check_args.insert(check_args.end(), train_args.begin(), train_args.end());
    const Result trained = run(train_args), checked = run(check_args);
    INFO(bad[0] << ": training says " << trained.err << ", check-gpu says " << checked.err);
    CHECK(trained.code == 2);
    CHECK(checked.code == 2);
    CHECK(checked.err == trained.err);
  }
  // The job's rank count, as the Slurm pre-flight passes it.
  const Result layout = run({"check-gpu", "configs/train/debug_moe.toml", "--distributed.ep=2", "--world-size=3"});
  CHECK(layout.code == 2);
  CHECK_THAT(layout.err, Contains("3 ranks"));
}

TEST_CASE("check-gpu: bad options and no GPU exit 2 with one line") {
  const Result unknown = run({"check-gpu", "--devcie=0"});
  CHECK(unknown.code == 2);
  CHECK_THAT(unknown.err, Contains("check-gpu: unknown option --devcie=0"));
  const Result device = run({"check-gpu", "--device=x"});
  CHECK(device.code == 2);
  CHECK_THAT(device.err, Contains("--device=x: must be a GPU index"));
  if (moe::cuda_device_count() == 0) {
    const Result none = run({"check-gpu"});
    CHECK(none.code == 2);
    CHECK_THAT(none.err, Contains("check-gpu: no GPU can be used here ("));
    // A run that would train on the CPU here has nothing to check.
    const Result cpu = run({"check-gpu", "configs/train/debug_moe.toml", "--for-training"});
    CHECK(cpu.code == 0);
    CHECK_THAT(cpu.out, Contains("train.device resolves to \"cpu\" here: no GPU to check"));
    const Result cuda = run({"check-gpu", "configs/train/debug_moe.toml", "--train.device=cuda", "--for-training"});
    CHECK(cuda.code == 2);
    CHECK_THAT(cuda.err, Contains("train.device = \"cuda\", but no GPU can be used here"));
  }
}

TEST_CASE("--help prints usage") {
  Result r = run({"--help"});
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Contains("usage: moe_train CONFIG.toml"));
}
