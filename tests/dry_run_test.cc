// The --dry-run calculator against numbers worked out by hand.
#include <catch2/catch.hpp>

#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/train/dry_run.h"
#include "src/parallel/launch_env.h"
#include "src/train/memory_fit.h"

#include <cstdlib>

namespace {

moe::DryRunReport estimate(const moe::JobConfig& cfg) {
  moe::validate_config(cfg);
  return moe::estimate_dry_run(cfg, moe::resolve_layout(cfg.distributed, std::nullopt));
}

}  // namespace

TEST_CASE("debug_moe.toml (with a 32000 vocabulary) on one rank") {
  // dim 256, 4 layers, 4 heads / 2 KV (head 64), vocab 32000, ffn and expert hidden 768,
  // 4 experts top-2 in blocks 1 and 3, untied, bf16.
  auto cfg = moe::load_config_file("configs/train/debug_moe.toml", {"model.vocab_size=32000"}).cfg;
  auto r = estimate(cfg);
  CHECK(r.embedding_params == 2 * 32000 * 256);                      // embedding + LM head
  CHECK(r.attention_params == 4 * (256 * 256 * 2 + 128 * 256 * 2));  // q, o + k, v
  CHECK(r.dense_mlp_params == 2 * 3 * 256 * 768);                    // blocks 0 and 2
  CHECK(r.router_params == 2 * 4 * 256);
  CHECK(r.routed_expert_params == 2 * 4 * 3 * 256 * 768);
  CHECK(r.shared_expert_params == 0);
  CHECK(r.norm_params == 4 * 2 * 256 + 256);
  CHECK(r.total_params == 23073024);
  CHECK(r.active_params == 23073024 - 2 * 2 * 3 * 256 * 768);  // two skipped experts per MoE block
  CHECK(r.routed_expert_share == Approx(4718592.0 / 23073024.0));
  // Matmul params a token meets: attention, dense MLPs, routers, 2 experts per MoE block, LM head.
  CHECK(r.matmul_params_per_token == 786432 + 1179648 + 2048 + 2 * 2 * 3 * 256 * 768 + 32000 * 256);
  CHECK(r.matmul_flops_per_token == 6.0 * 12519424);
  CHECK(r.attention_flops_per_token == 12.0 * 4 * 256 * 512);
  CHECK(r.flops_per_token == 6.0 * 12519424 + 12.0 * 4 * 256 * 512);
  CHECK(r.tokens_per_step == 4 * 512);
  // One rank, no sharding: everything held; bf16 adds a 2-byte working copy.
  CHECK(r.compute_dtype == "bf16");
  CHECK(r.params_per_rank == 23073024);
  CHECK(r.master_weight_bytes == 4 * 23073024);
  CHECK(r.compute_copy_bytes == 2 * 23073024);
  CHECK(r.gradient_bytes == 4 * 23073024);
  CHECK(r.optimizer_bytes == 8 * 23073024);
  CHECK(r.fsdp_buffer_bytes == 0);
  // Activations (bf16, N = 2048 tokens): at least the residual stream of the
  // 5 block boundaries and one 2048-row chunk of 32000 logits; the exact sum
  // is held against the allocations in tests/train/memory_plan_test.cc.
  CHECK(r.activation_bytes > 5 * 2048 * 256 * 2 + 131 * 32000 * 2);
  CHECK(r.total_bytes == 18 * 23073024 + r.activation_bytes);
  // On a GPU, cuDNN's deterministic attention backward: a bf16 dP buffer of
  // B x H x T x T and fp32 softmax sums (B = 4, H = 4, T = 512).
  CHECK(r.attention_kernel == "cuDNN fused SDPA");
  CHECK(r.attention_workspace_bytes == 4 * 4 * 512 * 512 * 2 + 4 * 4 * 512 * 4);
  CHECK(r.gpu_total_bytes == r.total_bytes + r.attention_workspace_bytes);
}

TEST_CASE("--dry-run counts the attention workspace of the kernel a GPU would run") {
  const auto with = [](std::vector<std::string> o) {
    return estimate(moe::load_config_file("configs/train/debug_moe.toml", o).cfg);
  };
  // Non-deterministic cuDNN: an fp32 dQ accumulator (Dh = 64) instead of dP.
  auto r = with({"train.deterministic=false"});
  CHECK(r.attention_workspace_bytes == 4 * 4 * 512 * 64 * 4 + 4 * 4 * 512 * 4);
  // The builtin kernel, forced or because fp32 activations: B x H x T fp32 sums.
  for (const std::string o : {"train.kernels=builtin", "train.mixed_precision=fp32"}) {
    r = with({o});
    CHECK(r.attention_kernel == "builtin flash attention (WMMA)");
    CHECK(r.attention_workspace_bytes == 4 * 4 * 512 * 4);
  }
  // On the CPU: none.
  r = with({"train.device=cpu"});
  CHECK(r.attention_workspace_bytes == 0);
  CHECK(r.gpu_total_bytes == r.total_bytes);
}

TEST_CASE("--dry-run counts the FP8 codes of the largest dense GEMM on a GPU") {
  const auto with = [](std::vector<std::string> o) {
    return estimate(moe::load_config_file("configs/train/debug_dense.toml", o).cfg);
  };
  // debug_dense: N = 4 x 512 tokens, dim 256, FFN 768. The largest is the
  // FFN's up projection: dout and its transpose (N x 768 each), W's
  // transpose (768 x 256), x's (N x 256), after a 256-byte header.
  auto r = with({"train.mixed_precision=fp8", "train.device=cuda"});
  const int64_t N = 4 * 512;
  CHECK(r.fp8_workspace_bytes == 256 + 2 * N * 768 + 768 * 256 + N * 256);
  CHECK(r.gpu_total_bytes == r.total_bytes + r.attention_workspace_bytes + r.fp8_workspace_bytes);
  CHECK(moe::format_dry_run(
            r,
            moe::load_config_file("configs/train/debug_dense.toml", {"train.mixed_precision=fp8", "train.device=cuda"})
                .cfg,
            "debug_dense.toml")
            .find("FP8 codes of the largest GEMM") != std::string::npos);
  // bf16, or on the CPU: none.
  CHECK(with({"train.mixed_precision=bf16", "train.device=cuda"}).fp8_workspace_bytes == 0);
  CHECK(with({"train.mixed_precision=fp8", "train.device=cpu"}).fp8_workspace_bytes == 0);
}

TEST_CASE("a sharded layout with tied embeddings and shared experts") {
  auto cfg = moe::load_config_text(R"(
[model]
dim = 64
n_layers = 2
n_heads = 4
n_kv_heads = 2
vocab_size = 1000
ffn_hidden_dim = 128
tie_embeddings = true
num_experts = 4
moe_top_k = 1
moe_frequency = 1
moe_shared_experts = 1
moe_expert_ffn_multiplier = 0.5   # expert hidden 64
moe_router = "sigmoid_topk"
max_seq_len = 32
[train]
batch_size = 2
seq_len = 32
grad_accum_steps = 2
mixed_precision = "fp32"
[distributed]
tp = 2
ep = 2
dp_shard = 2
)",
                                   "inline", {})
                 .cfg;
  auto r = estimate(cfg);
  // Per block: norms 128, attention 4096+2048+2048+4096 = 12288, router 256,
  // routed experts 3*4*64*64 = 49152, shared expert 3*64*64 = 12288 -> 74112.
  CHECK(r.total_params == 64000 + 2 * 74112 + 64);
  CHECK(r.embedding_params == 64000);  // tied: no separate LM head
  CHECK(r.active_params == 212288 - 2 * 3 * 12288);
  // Attention 24576 + routers 512 + one expert per block 24576 + shared 24576 + tied head 64000.
  CHECK(r.matmul_params_per_token == 138240);
  CHECK(r.flops_per_token == 6.0 * 138240 + 12.0 * 2 * 64 * 32);
  CHECK(r.tokens_per_step == 2 * 32 * 2 * (2 * 2));  // data-parallel ranks: dp_shard x ep
  // Per rank (flat FSDP shards over dp_shard = 2): embedding (replicated
  // across tp) 64000/dp = 32000; per block: norms 2*64/2 = 64, attention
  // (4096+2048+2048+4096)/tp/dp = 3072, router 256/2 = 128, experts
  // 3*16384/ep/dp = 12288, shared expert (replicated across tp) 3*4096/dp =
  // 6144 -> 21696; final norm 32.
  CHECK(r.params_per_rank == 32000 + 2 * 21696 + 32);
  CHECK(r.master_weight_bytes == 4 * 75424);
  CHECK(r.gradient_bytes == 4 * 75424);
  CHECK(r.optimizer_bytes == 8 * 75424);
  // FSDP gathers one block at a time (the largest: 128+6144+256+24576+12288 =
  // 43392 elements) and the outer unit (embedding + final norm: 64064), weights
  // and fp32 gradients, plus the shards of the largest unit (the outer one:
  // embedding 32000 + final norm 32) for its batched reduce-scatter.
  CHECK(r.compute_dtype == "fp32");
  CHECK(r.compute_copy_bytes == 0);
  CHECK(r.fsdp_buffer_bytes == 4 * (43392 + 64064) + 4 * (43392 + 64064) + 4 * 32032);
  CHECK(r.total_bytes == 16 * 75424 + r.fsdp_buffer_bytes + r.activation_bytes);
}

TEST_CASE("under pipeline parallelism the calculator plans every stage and reports the largest") {
  auto whole = moe::load_config_file("configs/train/debug_dense.toml", {}).cfg;
  auto staged = moe::load_config_file("configs/train/debug_dense.toml", {"distributed.pp=2"}).cfg;
  const moe::DryRunReport one = estimate(whole), two = estimate(staged);
  // The same model and tokens per step; each stage holds part of the weights.
  CHECK(two.total_params == one.total_params);
  CHECK(two.tokens_per_step == one.tokens_per_step);
  CHECK(two.params_per_rank < one.params_per_rank);
  CHECK(two.total_bytes < one.total_bytes);
  // The last stage (2 blocks, the final norm and the LM head with its logits) outweighs the first (the embedding).
  CHECK(two.pp_stage == 1);
  const std::string text = moe::format_dry_run(two, staged, "debug_dense.toml");
  CHECK_THAT(text, Catch::Matchers::Contains(
                       "pipeline: 2 stages, 1F1B over grad_accum_steps = 1 micro-batches; blocks 0-1, 2-3"));
  CHECK_THAT(text, Catch::Matchers::Contains("pipeline stage 1 of 2, the largest"));
}

TEST_CASE("a plan fits when the ranks of a node together fit its memory") {
  const int64_t gib = int64_t{1} << 30;
  const moe::MemoryBudget node{10 * gib, 4, "this node's host RAM (shared by its 4 ranks)"};
  CHECK(moe::memory_fit_problem(2 * gib, node).empty());
  CHECK(moe::memory_fit_problem(10 * gib / 4, node).empty());
  const std::string problem = moe::memory_fit_problem(3 * gib, node);
  CHECK_THAT(problem, Catch::Contains("the plan needs 3.00 GiB per rank (12.00 GiB for the 4 ranks of this node), and "
                                      "this node's host RAM (shared by its 4 ranks) has 10.00 GiB for it"));
  // The node's rank count comes from the launcher (here mpirun's variables).
  setenv("OMPI_COMM_WORLD_RANK", "0", 1);
  setenv("OMPI_COMM_WORLD_SIZE", "3", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "3", 1);
  CHECK(moe::read_launch_env().local_size == 3);
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE"})
    unsetenv(name);
  CHECK(moe::host_memory_bytes() > 0);
}
