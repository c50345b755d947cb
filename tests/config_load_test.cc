// Loading configs: types, unknown and ignored keys, overrides, TOML errors,
// derived defaults, and the shipped configs.
#include <catch2/catch.hpp>

#include "src/config/derived.h"
#include "src/config/load.h"
#include "src/config/suggest.h"
#include "src/config/to_json.h"
#include "src/config/validate.h"
#include "src/core/user_error.h"

using Catch::Matchers::Contains;
using moe::load_config_text;
using moe::UserError;

namespace {

moe::JobConfig load(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return load_config_text(text, "test.toml", overrides).cfg;
}

}  // namespace

TEST_CASE("an empty file gives KempnerForge's defaults") {
  moe::JobConfig c = load("");
  CHECK(c.model.dim == 4096);
  CHECK(c.model.n_layers == 32);
  CHECK_FALSE(c.model.n_kv_heads.has_value());
  CHECK(moe::kv_heads(c.model) == 32);
  CHECK(c.model.num_experts == 0);
  CHECK(c.model.moe_top_k == 2);
  CHECK(c.model.moe_router == "softmax_topk");
  CHECK(c.model.moe_aux_loss_weight == 0.01);
  CHECK(c.train.batch_size == 8);
  CHECK(c.train.mixed_precision == "bf16");
  CHECK(c.optimizer.betas[0] == 0.9);
  CHECK(c.optimizer.betas[1] == 0.95);
  CHECK(c.scheduler.warmup_steps == 2000);
  CHECK(c.distributed.dp_shard == -1);
  CHECK(c.distributed.nccl_timeout_sec == 1800);
  CHECK(c.checkpoint.keep_last_n == 3);
  CHECK(c.metrics.log_interval == 10);
}

TEST_CASE("values of every type are read") {
  moe::JobConfig c = load(R"(
[model]
dim = 512
n_kv_heads = 4
ffn_dim_multiplier = 2      # an integer is a valid float
tie_embeddings = true
moe_router = "sigmoid_topk"
[optimizer]
betas = [0.8, 0.99]
[scheduler]
decay_steps = 100
)");
  CHECK(c.model.dim == 512);
  CHECK(c.model.n_kv_heads == 4);
  CHECK(c.model.ffn_dim_multiplier == 2.0);
  CHECK(c.model.tie_embeddings);
  CHECK(c.model.moe_router == "sigmoid_topk");
  CHECK(c.optimizer.betas[1] == 0.99);
  CHECK(c.scheduler.decay_steps == 100);
}

TEST_CASE("a wrong type names the key, the place and the expected type") {
  CHECK_THROWS_WITH(load("[model]\ndim = 2.5\n"),
                    Contains("model.dim = 2.5 (test.toml:2:7)") && Contains("must be an integer"));
  CHECK_THROWS_WITH(load("[model]\ntie_embeddings = 1\n"),
                    Contains("model.tie_embeddings = 1") && Contains("must be true or false"));
  CHECK_THROWS_WITH(load("[train]\nseq_len = \"long\"\n"), Contains("train.seq_len = \"long\""));
  CHECK_THROWS_WITH(load("[optimizer]\nbetas = [0.9]\n"), Contains("must be an array of two numbers"));
  CHECK_THROWS_WITH(load("model = 3\n"), Contains("must be a [model] table"));
}

TEST_CASE("an enumeration outside its values lists them") {
  CHECK_THROWS_WITH(load("[model]\nmoe_router = \"topk\"\n"),
                    Contains("model.moe_router = \"topk\"") && Contains("softmax_topk | sigmoid_topk"));
  CHECK_THROWS_WITH(load("[model]\nmoe_bias_schedule = \"cosine\"\n"),
                    Contains("constant | cosine_decay | linear_warmup"));
  CHECK_THROWS_WITH(load("[train]\nmixed_precision = \"fp16\"\n"), Contains("fp32 | bf16 | fp8"));
  CHECK_THROWS_WITH(load("[train]\ndevice = \"gpu\"\n"), Contains("auto | cpu | cuda"));
}

TEST_CASE("an unknown key gets a suggestion") {
  CHECK_THROWS_WITH(load("[model]\nnum_expert = 4\n"),
                    Contains("unknown key model.num_expert") && Contains("did you mean model.num_experts?"));
  CHECK_THROWS_WITH(load("[model]\nseq_len = 128\n"), Contains("it belongs in [train], not [model]"));
  CHECK_THROWS_WITH(load("[model]\nzzzzzzzz = 1\n"), Contains("known keys of [model] are dim,"));
  CHECK_THROWS_WITH(load("[trian]\nseq_len = 1\n"), Contains("unknown section [trian]") && Contains("[train]"));
}

TEST_CASE("PyTorch-only keys are collected for one notice") {
  auto loaded = load_config_text(R"(
[train]
compile_model = false
[data]
num_workers = 4
pin_memory = true
[metrics]
wandb_project = "kempnerforge"
[profiling]
enabled = true
)",
                                 "kf.toml", {});
  CHECK(loaded.ignored_keys == std::vector<std::string>{"data.num_workers", "data.pin_memory", "metrics.wandb_project",
                                                        "[profiling]", "train.compile_model"});
}

TEST_CASE("TOML syntax errors give file:line:column") {
  CHECK_THROWS_WITH(load("[model]\ndim = = 3\n"), Contains("test.toml:2:") && Contains("TOML syntax error"));
}

TEST_CASE("command-line overrides use TOML values and bare strings") {
  moe::JobConfig c = load("[optimizer]\nlr = 1e-3\n", {"optimizer.lr=3e-4", "model.num_experts=8",
                                                       "model.moe_router=sigmoid_topk", "optimizer.betas=[0.9, 0.99]",
                                                       "data.dataset_path=/data/tokens", "model.tie_embeddings=true"});
  CHECK(c.optimizer.lr == 3e-4);
  CHECK(c.model.num_experts == 8);
  CHECK(c.model.moe_router == "sigmoid_topk");
  CHECK(c.optimizer.betas[1] == 0.99);
  CHECK(c.data.dataset_path == "/data/tokens");
  CHECK(c.model.tie_embeddings);
  CHECK_THROWS_WITH(load("", {"model.dimm=3"}), Contains("did you mean model.dim?") && Contains("command line"));
  CHECK_THROWS_WITH(load("", {"model.dim=abc"}), Contains("not valid TOML") && Contains("must be an integer"));
  CHECK_THROWS_WITH(load("", {"modeldim=3"}), Contains("must look like --section.key=value"));
  CHECK_THROWS_WITH(load("", {"model.moe_router=bogus"}), Contains("must be one of"));
}

TEST_CASE("derived sizes follow the Python formulas") {
  moe::ModelConfig m;
  m.dim = 256;
  CHECK(moe::ffn_hidden(m) == 768);  // int(1024*2/3) = 682 -> 3*256
  m.dim = 2048;
  m.ffn_dim_multiplier = 1.3;
  CHECK(moe::ffn_hidden(m) == 7168);  // int(5461.33*1.3) = 7099 -> 28*256
  m.ffn_hidden_dim = 1000;
  CHECK(moe::ffn_hidden(m) == 1000);
  m.moe_expert_ffn_multiplier = 0.5;
  CHECK(moe::expert_hidden(m) == 496);  // 500/16 = 31.25 -> 31*16
  m.ffn_hidden_dim = 200;
  m.moe_expert_ffn_multiplier = 0.2;
  CHECK(moe::expert_hidden(m) == 32);  // 40/16 = 2.5 rounds half to even (Python) -> 2 -> 32, not 48
  m.moe_expert_ffn_multiplier = 0.01;
  CHECK(moe::expert_hidden(m) == 16);  // int(2)/16 rounds to 0 -> the floor of 16
}

TEST_CASE("MoE blocks are chosen by moe_frequency") {
  moe::ModelConfig m;
  m.n_layers = 4;
  m.num_experts = 4;
  m.moe_frequency = 2;
  CHECK_FALSE(moe::is_moe_block(m, 0));
  CHECK(moe::is_moe_block(m, 1));
  CHECK_FALSE(moe::is_moe_block(m, 2));
  CHECK(moe::is_moe_block(m, 3));
  CHECK(moe::num_moe_blocks(m) == 2);
  m.num_experts = 0;
  CHECK(moe::num_moe_blocks(m) == 0);
}

TEST_CASE("edit distance and suggestions") {
  CHECK(moe::edit_distance("kitten", "sitting") == 3);
  CHECK(moe::closest_match("lr_warmup", {"lr", "warmup_steps"}) == "");
  CHECK(moe::closest_match("moe_topk", {"moe_top_k", "moe_router"}) == "moe_top_k");
}

TEST_CASE("the shipped configs load and validate") {
  for (const char* path :
       {"configs/train/debug_moe.toml", "configs/train/debug_dense.toml", "configs/train/moe_ep_32gpu.toml"}) {
    INFO(path);
    moe::LoadedConfig loaded = moe::load_config_file(path, {});
    CHECK_NOTHROW(moe::validate_config(loaded.cfg));
  }
  moe::JobConfig moe_cfg = moe::load_config_file("configs/train/debug_moe.toml", {}).cfg;
  CHECK(moe_cfg.model.dim == 256);
  CHECK(moe_cfg.model.n_layers == 4);
  CHECK(moe_cfg.model.n_heads == 4);
  CHECK(moe_cfg.model.n_kv_heads == 2);
  CHECK(moe_cfg.model.num_experts == 4);
  CHECK(moe_cfg.model.moe_top_k == 2);
  CHECK(moe_cfg.model.moe_frequency == 2);

  moe::JobConfig big = moe::load_config_file("configs/train/moe_ep_32gpu.toml", {}).cfg;
  CHECK(big.model.dim == 2048);
  CHECK(big.model.n_layers == 24);
  CHECK(big.model.n_heads == 16);
  CHECK(big.model.n_kv_heads == 4);
  CHECK(big.model.vocab_size == 128256);
  CHECK(big.model.num_experts == 8);
  CHECK(big.model.moe_top_k == 2);
  CHECK(big.distributed.tp == 4);
  CHECK(big.distributed.ep == 2);
  CHECK(big.distributed.dp_shard == 4);
  CHECK(big.train.mixed_precision == "bf16");
  CHECK(big.train.activation_checkpointing == "full");
  CHECK(moe::resolve_layout(big.distributed, 32).world() == 32);
}

TEST_CASE("config_to_json writes every section in schema order") {
  moe::JobConfig c = load("[model]\ndim = 128\n");
  auto j = moe::config_to_json(c);
  CHECK(j["model"]["dim"] == 128);
  CHECK(j["model"]["n_kv_heads"].is_null());
  CHECK(j["optimizer"]["betas"][1] == 0.95);
  std::vector<std::string> sections;
  for (auto it = j.begin(); it != j.end(); ++it) sections.push_back(it.key());
  CHECK(sections == std::vector<std::string>{"model", "train", "optimizer", "scheduler", "distributed", "data", "eval",
                                             "checkpoint", "metrics"});
}
