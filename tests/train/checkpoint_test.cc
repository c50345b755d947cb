// Checkpoints on one process, through the command line: a resumed run
// continues bit for bit; old checkpoints are pruned only after a new one is
// complete; a save killed half-way leaves the previous checkpoint loadable;
// damaged, truncated or mismatched checkpoints are refused with one line
// naming the file and the tensor.
#include <catch2/catch.hpp>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "src/core/build_info.h"
#include "src/core/tensor_pool.h"
#include "src/parallel/communicator.h"
#include "src/checkpoint/checkpoint.h"
#include "src/checkpoint/safetensors.h"
#include "tests/data/test_files.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;

using moe::test::logged_losses;
using moe::test::with;

namespace {

struct Run {
  int code;
  std::string err;
};

Run run(const std::vector<std::string>& args) {
  const auto r = moe::test::run_cli_captured(args);
  return {r.code, r.err};
}

// A structured token stream and the tiny MoE that trains on it, with router
// jitter: a resumed run draws the noise the uninterrupted one drew.
std::vector<std::string> tiny_args(const std::string& dir) {
  const std::string data = dir + "/data";
  if (!fs::exists(data + "/tokens.npy")) {
    fs::create_directories(data);
    std::vector<uint16_t> tokens(8192);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint16_t>((i * 7 + i / 11) % 61);
    moe::test::write_token_npy(data + "/tokens.npy", tokens);
  }
  return {"configs/train/debug_moe.toml",
          "--model.dim=32",
          "--model.n_layers=2",
          "--model.ffn_hidden_dim=64",
          "--model.vocab_size=64",
          "--model.moe_router=sigmoid_topk",
          "--train.seq_len=16",
          "--train.batch_size=2",
          "--train.grad_accum_steps=2",
          "--scheduler.warmup_steps=2",
          "--metrics.log_interval=1",
          "--data.dataset_path=" + data,
          "--model.moe_router_jitter=0.05"};
}

}  // namespace

TEST_CASE("a resumed run continues bit for bit") {
  const std::string dir = moe::test::fresh_dir("ckpt_resume");
  const auto base = tiny_args(dir);
  // Uninterrupted: 10 steps.
  REQUIRE(run(with(base, {"--train.max_steps=10", "--checkpoint.interval=5", "--checkpoint.dir=" + dir + "/a",
                          "--metrics.jsonl_path=" + dir + "/a.jsonl"}))
              .code == 0);
  // Interrupted after step 5: a new process, the same command, a folder whose
  // latest checkpoint is step 5, resumes from it.
  fs::create_directories(dir + "/b");
  fs::copy(dir + "/a/step_5", dir + "/b/step_5", fs::copy_options::recursive);
  std::ofstream(dir + "/b/latest") << "step_5\n";
  REQUIRE(run(with(base, {"--train.max_steps=10", "--checkpoint.interval=5", "--checkpoint.dir=" + dir + "/b",
                          "--metrics.jsonl_path=" + dir + "/b.jsonl"}))
              .code == 0);
  const auto a = logged_losses(dir + "/a.jsonl"), b = logged_losses(dir + "/b.jsonl");
  REQUIRE(a.size() == 10);
  REQUIRE(b.size() == 5);  // steps 6-10 only
  for (int64_t s = 6; s <= 10; ++s) {
    INFO("step " << s);
    CHECK(b.at(s) == a.at(s));
  }
  CHECK(a.at(10) != a.at(5));  // the run does move

  // The checkpoint itself: the files and metadata the format promises.
  std::ifstream meta_in(dir + "/b/step_10/metadata.json");
  const auto meta = nlohmann::json::parse(meta_in);
  CHECK(meta["step"] == 10);
  CHECK(meta["tokens_seen"] == 10 * 2 * 16 * 2);
  CHECK(meta["files"].size() == 1);
  CHECK(meta["tensors"].contains("model.layers.1.block_sparse_moe.experts.w2.exp_avg_sq"));
  CHECK(meta["tensors"].contains("model.layers.1.block_sparse_moe.gate.e_score_correction_bias"));
  CHECK(meta["config"]["model"]["dim"] == 32);
  CHECK(meta["build"]["version"] == moe::moe_train_version());
  CHECK(meta["build"]["commit"] == moe::build_commit());
  CHECK(meta["build"].contains("cuda_built"));
}

TEST_CASE("keep_last_n prunes only complete older checkpoints of the run; resume = never beside them is refused") {
  const std::string dir = moe::test::fresh_dir("ckpt_keep");
  const auto base = tiny_args(dir);
  REQUIRE(run(with(base, {"--train.max_steps=8", "--checkpoint.interval=2", "--checkpoint.keep_last_n=2",
                          "--checkpoint.dir=" + dir + "/c"}))
              .code == 0);
  CHECK(!fs::exists(dir + "/c/step_2"));
  CHECK(!fs::exists(dir + "/c/step_4"));
  CHECK(fs::exists(dir + "/c/step_6/metadata.json"));
  CHECK(fs::exists(dir + "/c/step_8/metadata.json"));
  CHECK(moe::latest_checkpoint(dir + "/c") == dir + "/c/step_8");
  const Run again = run(with(base, {"--train.max_steps=3", "--checkpoint.resume=never", "--checkpoint.interval=100",
                                    "--checkpoint.dir=" + dir + "/c"}));
  CHECK(again.code == 2);
  CHECK_THAT(again.err, Catch::Contains("holds checkpoints of an earlier run (step_6, step_8)") &&
                            Catch::Contains("give this run another checkpoint.dir"));
  CHECK(moe::latest_checkpoint(dir + "/c") == dir + "/c/step_8");
  CHECK(fs::exists(dir + "/c/step_6/metadata.json"));
}

TEST_CASE("a save killed half-way leaves the previous checkpoint loadable") {
  const std::string dir = moe::test::fresh_dir("ckpt_kill");
  moe::JobConfig cfg;
  cfg.checkpoint.dir = dir;
  cfg.checkpoint.keep_last_n = 0;
  // A big tensor, so that the writer is killed while it writes.
  std::vector<float> big(std::size_t{48} << 20, 1.5f);
  moe::Tensor t;
  t.data = big.data();
  t.ndim = 1;
  t.shape[0] = static_cast<int64_t>(big.size());
  const moe::ParamPlacement place = moe::place_parameter({t.shape[0]}, -1, false, moe::Layout{}, moe::MeshCoord{});
  const std::vector<moe::StateTensor> state = {{"w", place, t, true}};
  auto world = moe::single_process_world();
  moe::save_checkpoint(cfg, {1, 100}, state, *world);

  for (int attempt = 0; attempt < 3; ++attempt) {
    const pid_t child = fork();
    if (child == 0) {
      for (int64_t step = 2;; ++step) moe::save_checkpoint(cfg, {step, 100 * step}, state, *world);
    }
    usleep(static_cast<useconds_t>(30000 + 40000 * attempt));  // somewhere inside a save
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    const std::string latest = moe::latest_checkpoint(dir);
    INFO("latest after the kill: " << latest);
    REQUIRE(!latest.empty());
    std::vector<float> back(big.size(), 0.0f);
    moe::Tensor b = t;
    b.data = back.data();
    const moe::TrainPosition at = moe::load_checkpoint(dir, {{"w", place, b, true}});
    CHECK(dir + "/step_" + std::to_string(at.step) == latest);
    CHECK(back[0] == 1.5f);
    CHECK(back.back() == 1.5f);
  }
}

TEST_CASE("damaged, truncated and mismatched checkpoints are refused with their file and tensor") {
  const std::string dir = moe::test::fresh_dir("ckpt_bad");
  const auto base = tiny_args(dir);
  REQUIRE(run(with(base, {"--train.max_steps=2", "--checkpoint.dir=" + dir + "/good"})).code == 0);
  const std::string file = dir + "/good/step_2/rank_00000.safetensors";
  auto copy_to = [&](const std::string& name) {
    fs::copy(dir + "/good", dir + "/" + name, fs::copy_options::recursive);
    return dir + "/" + name + "/step_2/rank_00000.safetensors";
  };
  auto load = [&](const std::string& name, const std::vector<std::string>& extra = {}) {
    return run(with(base, with({"--train.max_steps=3", "--checkpoint.dir=" + dir + "/" + name}, extra)));
  };

  {  // one flipped byte in the middle of the data
    const std::string f = copy_to("flipped");
    std::fstream io(f, std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(static_cast<std::streamoff>(fs::file_size(f) / 2));
    io.put('\x5a');
    io.close();
    const Run r = load("flipped");
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains("rank_00000.safetensors: checksum mismatch"));
  }
  {  // truncated
    const std::string f = copy_to("truncated");
    fs::resize_file(f, fs::file_size(f) - 100);
    const Run r = load("truncated");
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains("rank_00000.safetensors"));
    CHECK_THAT(r.err, Catch::Contains("truncated"));
  }
  {  // a different model: refused, and the checkpoint folder is left as it was
    copy_to("other_model");
    const auto before = fs::file_size(file);
    const Run r = load("other_model", {"--model.dim=48"});
    CHECK(r.code == 2);
    CHECK_THAT(
        r.err,
        Catch::Contains(
            "metadata.json: the checkpoint is of another model: tensor model.embed_tokens.weight has shape [64, 32]"));
    CHECK(moe::latest_checkpoint(dir + "/other_model") == dir + "/other_model/step_2");
    CHECK(fs::file_size(dir + "/other_model/step_2/rank_00000.safetensors") == before);
  }
  {  // a half-written save (no metadata) named by load_path
    fs::create_directories(dir + "/half/step_9.tmp");
    const Run r = run(with(base, {"--train.max_steps=3", "--checkpoint.load_path=" + dir + "/half/step_9.tmp",
                                  "--checkpoint.dir=" + dir + "/half"}));
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains("metadata.json: missing"));
  }
  // Exactly one line each time (the CLI's UserError form).
  const Run r = load("flipped");
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

TEST_CASE("--export-hf exports the latest checkpoint's weights") {
  const std::string dir = moe::test::fresh_dir("ckpt_export");
  const auto base = with(tiny_args(dir), {"--model.moe_router=softmax_topk"});  // Mixtral's router
  REQUIRE(run(with(base, {"--train.max_steps=3", "--checkpoint.dir=" + dir + "/ckpt"})).code == 0);
  REQUIRE(run(with(base, {"--checkpoint.dir=" + dir + "/ckpt", "--export-hf=" + dir + "/hf"})).code == 0);
  REQUIRE(run(with(base, {"--checkpoint.dir=" + dir + "/none", "--export-hf=" + dir + "/hf_init"})).code == 0);
  auto tensor = [](const std::string& file, const std::string& name) {
    for (const auto& t : moe::read_safetensors(file)) {
      if (t.name == name) return t.data;
    }
    return std::vector<float>{};
  };
  const auto trained = tensor(dir + "/hf/model.safetensors", "model.embed_tokens.weight");
  const auto initial = tensor(dir + "/hf_init/model.safetensors", "model.embed_tokens.weight");
  const auto saved = tensor(dir + "/ckpt/step_3/rank_00000.safetensors", "model.embed_tokens.weight");
  REQUIRE(!trained.empty());
  CHECK(trained == saved);
  CHECK(trained != initial);
}
