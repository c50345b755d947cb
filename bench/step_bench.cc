// Benchmark: training-step throughput (forward, backward, grad norm, AdamW)
// of a config's model and micro-batch on random token ids, on the CPU or one GPU.
//   bazel run //bench:step_bench -- configs/train/debug_moe.toml
//   step_bench configs/train/bench_1b_moe.toml --device=cuda [--precision=bf16|fp32]
//              [--steps=N] [--profile] [--eager] [--key=value ...config overrides]
// Prints tokens/s, seconds per step, achieved TFLOP/s (FLOPs as --dry-run
// counts them: active parameters and attention) and MFU against the GPU's
// bf16 peak (989 TFLOP/s for H100/H200 SXM) or the CPU's measured sgemm rate;
// with --profile, the time of each op per step (ops::OpTimer). On the GPU the
// micro-batch replays as a CUDA graph, as in training; --eager launches each
// kernel instead (and --profile implies it: events cannot time inside a graph).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "src/config/derived.h"
#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/core/cuda_device.h"
#include "src/core/device_allocator.h"
#include "src/kernels/gpu_kernels.h"
#include "src/kernels/kernel_choice.h"
#include "src/kernels/op_profile.h"
#include "src/model/params.h"
#include "src/model/transformer.h"
#include "src/train/cpu_peak.h"
#include "src/train/dry_run.h"
#include "src/train/optimizer.h"
#include "src/train/placement.h"
#include "src/train/step_runner.h"

namespace {

struct Args {
  std::string config, device = "cpu", precision = "bf16";
  int steps = 5;
  bool profile = false;
  bool eager = false;
  std::vector<std::string> overrides;
};

bool take(const std::string& arg, const std::string& flag, std::string* value) {
  if (arg.rfind(flag + "=", 0) != 0) return false;
  *value = arg.substr(flag.size() + 1);
  return true;
}

Args parse(int argc, char** argv) {
  Args a;
  a.config = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    std::string v;
    if (take(arg, "--device", &a.device) || take(arg, "--precision", &a.precision)) continue;
    if (take(arg, "--steps", &v)) {
      a.steps = std::max(1, std::atoi(v.c_str()));
    } else if (arg == "--profile") {
      a.profile = true;
    } else if (arg == "--eager") {
      a.eager = true;
    } else if (arg.rfind("--", 0) == 0) {
      a.overrides.push_back(arg.substr(2));  // a config key=value
    } else {
      a.steps = std::max(1, std::atoi(arg.c_str()));  // the old positional [steps]
    }
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: step_bench CONFIG.toml [--device=cpu|cuda] [--precision=bf16|fp32] [--steps=N] [--profile] "
                 "[--section.key=value ...]\n");
    return 2;
  }
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY"); ws && *ws && chdir(ws) != 0) return 2;
  const Args args = parse(argc, argv);
  moe::JobConfig cfg = moe::load_config_file(args.config, args.overrides).cfg;
  moe::validate_config(cfg);
  moe::fill_derived_defaults(cfg);
  // Chosen here, after validation: the command line refuses train.device =
  // "cuda" until the GPU path has been checked on a GPU (src/config/not_built.cc).
  cfg.train.device = args.device;
  cfg.train.mixed_precision = args.precision;
  const auto& t = cfg.train;

  const moe::Placement where = moe::placement_of(t);
  const bool gpu = where.device == moe::Device::kCuda;
  const int device_index = gpu ? moe::select_cuda_device(0) : -1;
  // train.kernels and train.deterministic, as training applies them (compare with --train.kernels=builtin).
  moe::kernels::configure(moe::kernel_settings_of(t));
  moe::TensorPool pool(where.device);
  moe::ParamStore params(cfg.model, pool, moe::Layout{}, moe::MeshCoord{}, where.compute);
  params.init(cfg.model, 1);
  moe::Transformer model(cfg.model, t.batch_size, t.seq_len, t.ce_chunk_size, pool, params);
  if (gpu) {
    for (const std::string& line : moe::kernels::gpu_kernel_lines()) std::printf("  kernel: %s\n", line.c_str());
  }
  const bool graph = gpu && !args.eager && !args.profile;
  if (graph) model.replay_micro_batches_as_graph();
  moe::Optimizer opt(cfg.optimizer, params, pool);
  const auto world = moe::single_process_world();
  std::mt19937 gen(1);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(std::min<int64_t>(cfg.model.vocab_size, 257) - 1));
  const int64_t n = t.batch_size * t.seq_len;
  std::vector<int32_t> inputs(static_cast<size_t>(n)), targets(static_cast<size_t>(n));

  double total = 0;
  std::vector<moe::ops::OpTime> profile;
  const int warmup = graph ? 2 : 1;  // plans and scratch buffers; with a graph, its capture too
  for (int s = 1 - warmup; s <= args.steps; ++s) {
    for (int64_t i = 0; i < n; ++i) {
      inputs[static_cast<size_t>(i)] = tok(gen);
      targets[static_cast<size_t>(i)] = tok(gen);
    }
    moe::upload(model.inputs(), inputs.data());
    moe::upload(model.targets(), targets.data());
    moe::ops::set_op_profiling(args.profile && s > 0);
    const auto t0 = std::chrono::steady_clock::now();
    params.zero_grads();
    model.reset_moe_step_stats();
    model.forward_backward(1.0f);
    model.read_moe_step_stats();
    const double norm = opt.grad_norm(*world);
    opt.step(1e-4, moe::clip_scale(norm, 1.0), s + warmup);
    float probe = 0;  // waits for the step's last kernel
    moe::download(&probe, params.all().front().shard.reshaped({params.all().front().shard.numel()}).rows(0, 1));
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0) total += sec;
    if (args.profile && s > 0) {
      for (const moe::ops::OpTime& op : moe::ops::take_op_profile()) {
        auto it =
            std::find_if(profile.begin(), profile.end(), [&](const moe::ops::OpTime& o) { return o.op == op.op; });
        if (it == profile.end()) {
          profile.push_back(op);
        } else {
          it->calls += op.calls;
          it->ms += op.ms;
        }
      }
    }
  }
  const double per_step = total / args.steps;
  const auto report = moe::estimate_dry_run(cfg, moe::resolve_layout(cfg.distributed, std::nullopt));
  const double tok_s = static_cast<double>(n) / per_step;
  const double achieved = report.flops_per_token * tok_s;
  const double peak = gpu ? moe::cuda_peak_bf16_flops(device_index) : moe::measure_cpu_peak_flops();
  std::printf("config %s: %s, micro-batch %ld x %ld tokens, %s%s, %d steps\n", args.config.c_str(),
              gpu ? moe::cuda_device_description(device_index).c_str() : "CPU", static_cast<long>(t.batch_size),
              static_cast<long>(t.seq_len), gpu ? moe::dtype_name(where.compute) : "fp32", graph ? ", CUDA graph" : "",
              args.steps);
  std::printf("  %.4f s/step  %.0f tokens/s  %.2f TFLOP/s achieved  MFU %.1f%% (peak %.1f TFLOP/s%s)\n", per_step,
              tok_s, achieved / 1e12, peak > 0 ? 100.0 * achieved / peak : 0.0, peak / 1e12,
              gpu ? ", bf16 dense" : ", measured sgemm");
  if (gpu) {
    const moe::DeviceMemoryStats mem = moe::device_memory_stats();
    std::printf("  device memory: peak %.2f GiB in use, %.2f GiB reserved\n", mem.peak_in_use / 1073741824.0,
                mem.reserved / 1073741824.0);
  }
  if (args.profile) {
    std::sort(profile.begin(), profile.end(), [](const auto& a, const auto& b) { return a.ms > b.ms; });
    double in_ops = 0;
    for (const auto& op : profile) in_ops += op.ms;
    std::printf("  per step: %.2f ms in ops of %.2f ms\n", in_ops / args.steps, 1e3 * per_step);
    std::printf("  %-32s %10s %12s %8s\n", "op", "calls/step", "ms/step", "share");
    for (const auto& op : profile) {
      std::printf("  %-32s %10.1f %12.3f %7.1f%%\n", op.op.c_str(), static_cast<double>(op.calls) / args.steps,
                  op.ms / args.steps, 100.0 * op.ms / (1e3 * total));
    }
  }
  return 0;
}
