// Every validation rule, run through the real command line: each bad config
// exits 2 with one line naming the key, the value and the rule.
#include <catch2/catch.hpp>

#include <cstdlib>

#include "src/core/cuda_device.h"
#include "tests/test_support.h"

using Catch::Matchers::Contains;

namespace {

using Result = moe::test::CliResult;

Result run(const std::vector<std::string>& args) { return moe::test::run_cli_captured(args); }

size_t count_lines(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

struct BadConfig {
  std::string config;
  std::vector<std::string> overrides;
  std::vector<std::string> expected;  // fragments of the one-line message
};

void expect_rejected(const BadConfig& bad, const std::vector<std::string>& mode) {
  std::vector<std::string> args = {"configs/train/" + bad.config};
  for (const auto& o : bad.overrides) args.push_back("--" + o);
  args.insert(args.end(), mode.begin(), mode.end());
  Result r = run(args);
  CAPTURE(args, r.err);
  CHECK(r.code == 2);
  CHECK(count_lines(r.err) == 1);
  CHECK_THAT(r.err, Contains("moe_train: error: "));
  for (const auto& fragment : bad.expected) CHECK_THAT(r.err, Contains(fragment));
  CHECK(r.out.empty());
}

// A config the rules let through: its dry run succeeds.
void expect_accepted(const BadConfig& good) {
  std::vector<std::string> args = {"configs/train/" + good.config, "--dry-run"};
  for (const auto& o : good.overrides) args.push_back("--" + o);
  Result r = run(args);
  CAPTURE(args, r.err);
  CHECK(r.code == 0);
}

}  // namespace

TEST_CASE("each impossible or malformed config exits 2 with its one-line message") {
  const std::vector<BadConfig> cases = {
      // Combinations no trainer can run.
      {"debug_moe.toml", {"distributed.pp=2"}, {"distributed.pp = 2", "MoE models cannot use pipeline parallelism"}},
      {"debug_moe.toml",
       {"train.mixed_precision=fp8", "distributed.tp=2"},
       {"train.mixed_precision = \"fp8\"", "tensor parallelism (tp = 2)"}},
      {"debug_dense.toml", {"distributed.ep=2"}, {"distributed.ep = 2", "needs experts"}},
      {"debug_moe.toml", {"distributed.ep=3"}, {"model.num_experts = 4", "divisible by distributed.ep (3)"}},
      {"debug_dense.toml",
       {"model.tie_embeddings=true", "distributed.pp=2"},
       {"model.tie_embeddings = true", "pipeline parallelism"}},
      {"debug_moe.toml", {"train.seq_len=1024"}, {"train.seq_len = 1024", "model.max_seq_len (512)"}},
      {"debug_moe.toml", {"eval.enabled=true"}, {"eval.enabled = true", "needs an eval dataset"}},
      {"debug_moe.toml",
       {"checkpoint.load_path=a", "checkpoint.initial_load_path=b"},
       {"checkpoint.initial_load_path = \"b\"", "cannot be combined with checkpoint.load_path"}},
      // MoE settings.
      {"debug_moe.toml", {"model.moe_top_k=0"}, {"model.moe_top_k = 0", "1..model.num_experts (4)"}},
      {"debug_moe.toml", {"model.moe_top_k=5"}, {"model.moe_top_k = 5"}},
      {"debug_moe.toml",
       {"model.num_experts=64", "model.moe_top_k=33"},
       {"model.moe_top_k = 33", "at most 32", "pick fewer"}},
      {"debug_moe.toml",
       {"model.moe_router=expert_choice"},
       {"model.moe_capacity_factor = 0", "model.moe_router = \"expert_choice\"", "capacity_factor x tokens"}},
      {"debug_moe.toml",
       {"model.moe_router=expert_choice", "model.moe_capacity_factor=1", "model.moe_drop_tokens=false"},
       {"model.moe_drop_tokens = false", "exactly its capacity", "set moe_drop_tokens = true"}},
      {"debug_moe.toml",
       {"model.moe_router=expert_choice", "model.moe_capacity_factor=1", "model.num_experts=64"},
       {"model.num_experts = 64", "at most 32", "expert_choice"}},
      {"debug_moe.toml", {"model.moe_frequency=0"}, {"model.moe_frequency = 0", "must be positive"}},
      {"debug_moe.toml", {"model.moe_aux_loss_weight=-0.1"}, {"model.moe_aux_loss_weight = -0.1", "negative"}},
      {"debug_moe.toml", {"model.moe_router_z_loss_weight=-1"}, {"model.moe_router_z_loss_weight = -1"}},
      {"debug_moe.toml", {"model.moe_sequence_aux_loss_weight=-1e-3"}, {"model.moe_sequence_aux_loss_weight"}},
      {"debug_moe.toml", {"model.moe_capacity_factor=-1.0"}, {"model.moe_capacity_factor = -1"}},
      {"debug_moe.toml", {"model.moe_router=hash"}, {"model.moe_router = \"hash\"", "softmax_topk | sigmoid_topk"}},
      {"debug_moe.toml", {"model.moe_bias_schedule=step"}, {"model.moe_bias_schedule = \"step\""}},
      {"debug_dense.toml", {"model.moe_shared_experts=1"}, {"model.moe_shared_experts = 1", "needs an MoE model"}},
      // Head arithmetic.
      {"debug_moe.toml", {"distributed.tp=3"}, {"model.n_heads = 4", "divisible by distributed.tp (3)"}},
      {"debug_moe.toml", {"distributed.tp=4"}, {"model.n_kv_heads = 2", "divisible by distributed.tp (4)"}},
      {"debug_moe.toml", {"model.n_kv_heads=3"}, {"model.n_heads = 4", "divisible by model.n_kv_heads (3)"}},
      {"debug_moe.toml", {"model.n_heads=3", "model.n_kv_heads=3"}, {"model.dim = 256", "model.n_heads (3)"}},
      {"debug_moe.toml", {"model.dim=260"}, {"model.dim = 260", "odd head size 65"}},
      // Positive sizes and steps, ranges.
      {"debug_moe.toml", {"model.dim=0"}, {"model.dim = 0", "must be positive"}},
      {"debug_moe.toml", {"model.vocab_size=-5"}, {"model.vocab_size = -5"}},
      {"debug_moe.toml", {"train.batch_size=0"}, {"train.batch_size = 0"}},
      {"debug_moe.toml", {"train.max_steps=0"}, {"train.max_steps = 0"}},
      {"debug_moe.toml", {"train.grad_accum_steps=-1"}, {"train.grad_accum_steps = -1"}},
      {"debug_moe.toml", {"optimizer.lr=0"}, {"optimizer.lr = 0"}},
      {"debug_moe.toml", {"optimizer.betas=[0.9, 1.5]"}, {"optimizer.betas[1] = 1.5", "[0, 1)"}},
      {"debug_moe.toml", {"scheduler.min_lr_ratio=2"}, {"scheduler.min_lr_ratio = 2", "[0, 1]"}},
      {"debug_moe.toml", {"scheduler.warmup_steps=-1"}, {"scheduler.warmup_steps = -1"}},
      {"debug_moe.toml", {"distributed.dp_shard=0"}, {"distributed.dp_shard = 0", "-1 (fill the world)"}},
      {"debug_moe.toml", {"distributed.tp=0"}, {"distributed.tp = 0"}},
      {"debug_moe.toml", {"metrics.log_interval=0"}, {"metrics.log_interval = 0"}},
      {"debug_moe.toml", {"metrics.peak_tflops=-1"}, {"metrics.peak_tflops = -1", "not negative"}},
      {"debug_moe.toml", {"metrics.planned_mfu=0"}, {"metrics.planned_mfu = 0", "positive"}},
      {"debug_moe.toml", {"metrics.planned_mfu=1.5"}, {"metrics.planned_mfu = 1.5", "[0, 1]"}},
      {"debug_moe.toml", {"distributed.gpus_per_node=0"}, {"distributed.gpus_per_node = 0", "positive"}},
      {"debug_moe.toml", {"distributed.intra_node_gb_s=0"}, {"distributed.intra_node_gb_s = 0", "positive"}},
      {"debug_moe.toml", {"distributed.inter_node_gb_s=-5"}, {"distributed.inter_node_gb_s = -5", "positive"}},
      {"debug_moe.toml", {"distributed.intra_node_latency_us=-1"}, {"distributed.intra_node_latency_us = -1"}},
      {"debug_moe.toml", {"distributed.inter_node_latency_us=-1"}, {"distributed.inter_node_latency_us = -1"}},
      // Sizes beyond any model: every product the planner forms must fit int64.
      {"debug_moe.toml", {"model.n_layers=2147483647"}, {"model.n_layers = 2147483647", "at most 4096"}},
      {"debug_moe.toml", {"model.num_experts=9223372036854775807"}, {"model.num_experts = 9223372036854775807"}},
      {"debug_moe.toml", {"model.ffn_dim_multiplier=1e300"}, {"model.ffn_dim_multiplier = 1e+300", "at most 64"}},
      {"debug_moe.toml", {"distributed.ep=4194304"}, {"distributed.ep = 4194304", "at most 1048576"}},
      {"debug_moe.toml",
       {"model.dim=262144", "model.n_layers=4096", "model.n_heads=4"},
       {"model = ", "parameters: more than 10^15"}},
      {"debug_moe.toml",
       {"train.batch_size=16777216", "train.seq_len=65536", "model.max_seq_len=65536"},
       {"train.batch_size = 16777216", "one micro-batch's activations reach", "more than 2^52"}},
      {"debug_moe.toml",
       {"train.max_steps=1099511627776", "train.grad_accum_steps=1048576"},
       {"train.max_steps = 1099511627776", "more than 2^62 tokens"}},
      // Types.
      {"debug_moe.toml", {"model.dim=2.5"}, {"model.dim = 2.5", "must be an integer"}},
      {"debug_moe.toml", {"model.tie_embeddings=1"}, {"model.tie_embeddings = 1", "true or false"}},
      {"debug_moe.toml", {"model.num_expertz=8"}, {"did you mean model.num_experts?"}},
  };
  for (const auto& bad : cases) {
    expect_rejected(bad, {"--dry-run"});  // rejected before any work, whatever the mode
    expect_rejected(bad, {});
  }
}

TEST_CASE("the layout must match the rank count at start-up") {
  // A plain process is one rank.
  expect_rejected({"debug_moe.toml", {"distributed.dp_shard=2"}, {"= 2 ranks, but the job has 1", "launch that many"}},
                  {});
  expect_rejected({"moe_ep_32gpu.toml", {}, {"= 32 ranks, but the job has 1"}}, {});
  // dp_shard = -1 must divide what the other axes leave.
  setenv("OMPI_COMM_WORLD_SIZE", "3", 1);
  setenv("OMPI_COMM_WORLD_RANK", "0", 1);
  expect_rejected({"debug_moe.toml", {"distributed.ep=2"}, {"dp_shard = -1 with 3 ranks", "divisible by"}}, {});
  unsetenv("OMPI_COMM_WORLD_SIZE");
  unsetenv("OMPI_COMM_WORLD_RANK");
}

TEST_CASE("train.device = cuda where no GPU can be used exits 2 saying why") {
  if (moe::cuda_device_count() > 0) return;  // a GPU node: the run would train
  expect_rejected(
      {"debug_moe.toml",
       {"train.device=cuda"},
       {"train.device = \"cuda\", but no GPU can be used here (", "set train.device = \"cpu\" or \"auto\""}},
      {});
}

TEST_CASE("non-finite and out-of-range hyperparameters are refused") {
  expect_rejected({"debug_moe.toml", {"optimizer.lr=inf"}, {"optimizer.lr = inf", "positive finite number"}}, {});
  expect_rejected({"debug_moe.toml", {"optimizer.lr=nan"}, {"optimizer.lr = nan", "positive finite number"}}, {});
  expect_rejected({"debug_moe.toml", {"optimizer.weight_decay=inf"}, {"optimizer.weight_decay = inf", "finite"}}, {});
  expect_rejected({"debug_moe.toml", {"model.moe_router_jitter=1"}, {"model.moe_router_jitter = 1", "[0, 1)"}}, {});
  expect_rejected({"debug_moe.toml", {"model.moe_router_jitter=nan"}, {"model.moe_router_jitter = nan"}}, {});
  expect_rejected({"debug_moe.toml", {"model.moe_router_jitter=-0.1"}, {"model.moe_router_jitter = -0.1"}}, {});
  expect_rejected({"debug_moe.toml", {"model.moe_expert_dropout=1"}, {"model.moe_expert_dropout = 1", "[0, 1)"}}, {});
}

TEST_CASE("fp8 needs the dense GEMMs' shapes in multiples of 16, on every device") {
  expect_rejected({"debug_dense.toml",
                   {"train.mixed_precision=fp8", "train.seq_len=101"},
                   {"train.batch_size = 404", "batch_size x seq_len (4 x 101", "multiple of 16", "\"bf16\""}},
                  {});
  expect_rejected({"debug_dense.toml",
                   {"train.mixed_precision=fp8", "model.ffn_hidden_dim=100"},
                   {"model.ffn_hidden_dim = 100", "dense FFN's hidden size", "multiple of 16"}},
                  {});
  expect_rejected({"debug_dense.toml",
                   {"train.mixed_precision=fp8", "model.dim=264", "model.n_heads=4", "model.n_kv_heads=4"},
                   {"model.dim = 264", "multiple of 16"}},
                  {});
  // The same widths train in bf16.
  for (const std::string bf16 : {"train.seq_len=101", "model.ffn_hidden_dim=100"}) {
    expect_accepted({"debug_dense.toml", {"train.mixed_precision=bf16", bf16}});
  }
  // With MoE in every block the dense GEMMs are attention's: the unused dense width is free.
  expect_accepted(
      {"debug_moe.toml", {"train.mixed_precision=fp8", "model.moe_frequency=1", "model.ffn_hidden_dim=100"}});
}

TEST_CASE("tensor parallelism needs a dense MLP width it divides") {
  expect_rejected({"debug_dense.toml",
                   {"distributed.tp=2", "model.ffn_hidden_dim=99"},
                   {"model.ffn_hidden_dim = 99", "divisible by distributed.tp (2)"}},
                  {});
}

TEST_CASE("features not built yet say so instead of running something else") {
  expect_rejected({"debug_moe.toml", {"model.norm_type=layernorm"}, {"LayerNorm is not built yet"}}, {});
  expect_rejected({"debug_moe.toml", {"model.activation=gelu"}, {"not built yet"}}, {});
  expect_rejected({"debug_moe.toml", {"model.qk_norm=true"}, {"QK-norm is not built yet"}}, {});
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  setenv("OMPI_COMM_WORLD_RANK", "0", 1);
  // A dense model's pipeline of more stages than blocks.
  expect_rejected({"debug_dense.toml",
                   {"distributed.pp=2", "model.n_layers=1"},
                   {"distributed.pp = 2", "at most model.n_layers (1)", "fewer stages"}},
                  {});
  expect_rejected({"debug_dense.toml", {"distributed.cp=2"}, {"context parallelism is not built yet"}}, {});
  // Other ranks exit 2 as well, silently: only rank 0 prints.
  setenv("OMPI_COMM_WORLD_RANK", "1", 1);
  Result r = run({"configs/train/debug_moe.toml", "--distributed.ep=2"});
  CHECK(r.code == 2);
  CHECK(r.err.empty());
  unsetenv("OMPI_COMM_WORLD_SIZE");
  unsetenv("OMPI_COMM_WORLD_RANK");
}
