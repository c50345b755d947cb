// Benchmark: training throughput of the CPU path (forward, backward, AdamW)
// for a config's model and micro-batch, on random token ids.
//   bazel run //bench:cpu_step_bench -- configs/train/debug_moe.toml [steps]
// Prints tokens/s, seconds per step and achieved GFLOP/s (FLOPs as --dry-run counts them).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <unistd.h>

#include "src/config/derived.h"
#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/model/params.h"
#include "src/model/transformer.h"
#include "src/train/cpu_peak.h"
#include "src/train/dry_run.h"
#include "src/train/optimizer.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: cpu_step_bench CONFIG.toml [steps]\n");
    return 2;
  }
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY"); ws && *ws && chdir(ws) != 0) return 2;
  const int steps = argc > 2 ? std::atoi(argv[2]) : 5;
  moe::JobConfig cfg = moe::load_config_file(argv[1], {}).cfg;
  moe::validate_config(cfg);
  const auto& t = cfg.train;

  moe::TensorPool pool;
  moe::ParamStore params(cfg.model, pool);
  params.init(cfg.model, 1);
  moe::Transformer model(cfg.model, t.batch_size, t.seq_len, t.ce_chunk_size, pool, params);
  moe::Optimizer opt(cfg.optimizer, params, pool);
  std::mt19937 gen(1);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(std::min<int64_t>(cfg.model.vocab_size, 257) - 1));
  const int64_t n = t.batch_size * t.seq_len;

  double total = 0;
  for (int s = 0; s <= steps; ++s) {  // step 0 warms up
    for (int64_t i = 0; i < n; ++i) {
      model.inputs().i32()[i] = tok(gen);
      model.targets().i32()[i] = tok(gen);
    }
    const auto t0 = std::chrono::steady_clock::now();
    params.zero_grads();
    model.forward_backward(1.0f);
    opt.step(1e-4, 1.0, s + 1);
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0) total += sec;
  }
  const double per_step = total / steps;
  const auto report = moe::estimate_dry_run(cfg, moe::resolve_layout(cfg.distributed, std::nullopt));
  const double tok_s = static_cast<double>(n) / per_step;
  std::printf("config %s: micro-batch %ld x %ld tokens, %d steps\n", argv[1], static_cast<long>(t.batch_size),
              static_cast<long>(t.seq_len), steps);
  std::printf("  %.3f s/step  %.0f tokens/s  %.1f GFLOP/s achieved  (sgemm peak measured %.1f GFLOP/s)\n", per_step,
              tok_s, report.flops_per_token * tok_s / 1e9, moe::measure_cpu_peak_flops() / 1e9);
  return 0;
}
