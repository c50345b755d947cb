#include <fcntl.h>
#include <fmt/format.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "src/cli_options.h"
#include "src/commands.h"
#include "src/config/derived.h"
#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/core/child_process.h"
#include "src/core/cuda_device.h"
#include "src/core/user_error.h"
#include "src/parallel/launch_env.h"
#include "src/train/gpu_check.h"
#include "src/train/gpu_check_cache.h"
#include "src/train/gpu_check_nccl.h"
#include "src/train/trainer.h"

namespace moe {
namespace {

// check-gpu without a config: debug_moe's model (4 blocks, 2 of them MoE with
// top-2 of 4 experts, GQA 4/2, dim 256) on 4 sequences of 512 tokens.
JobConfig check_gpu_default_config() {
  JobConfig cfg;
  ModelConfig& m = cfg.model;
  m.dim = 256;
  m.n_layers = 4;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.vocab_size = 512;
  m.max_seq_len = 512;
  m.num_experts = 4;
  m.moe_top_k = 2;
  m.moe_frequency = 2;
  cfg.train.batch_size = 4;
  cfg.train.seq_len = 512;
  cfg.distributed.dp_shard = 1;
  return cfg;
}

// A child per GPU (this binary with `args` and --device=N), all at once: a
// process drives one GPU (the backend's stream, cuBLASLt handle and memory
// cache are per process). Returns each child's output and exit code, in
// device order; children still running after `timeout_s` are killed (124).
std::vector<std::pair<std::string, int>> check_each_gpu(const std::vector<std::string>& args, int devices,
                                                        int timeout_s) {
  std::vector<pid_t> children;
  std::vector<std::string> logs;
  for (int d = 0; d < devices; ++d) {
    logs.push_back(
        fmt::format("{}/moe_train_check_gpu_{}_{}.log", std::filesystem::temp_directory_path().string(), getpid(), d));
    std::vector<std::string> argv = {"moe_train", "check-gpu"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back("--device=" + std::to_string(d));
    std::vector<char*> cargv;
    for (std::string& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    posix_spawn_file_actions_t io;
    posix_spawn_file_actions_init(&io);
    posix_spawn_file_actions_addopen(&io, 1, logs.back().c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&io, 1, 2);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, "/proc/self/exe", &io, nullptr, cargv.data(), environ);
    posix_spawn_file_actions_destroy(&io);
    if (rc != 0) {
      for (pid_t c : children) kill(c, SIGKILL);
      throw std::runtime_error("check-gpu: cannot start the check of GPU " + std::to_string(d) + ": " +
                               std::strerror(rc));
    }
    children.push_back(pid);
  }
  std::vector<int> codes(static_cast<size_t>(devices), -1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  for (int left = devices; left > 0;) {
    for (int d = 0; d < devices; ++d) {
      int status = 0;
      if (codes[static_cast<size_t>(d)] >= 0 || waitpid(children[static_cast<size_t>(d)], &status, WNOHANG) <= 0)
        continue;
      codes[static_cast<size_t>(d)] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      --left;
    }
    if (left > 0 && std::chrono::steady_clock::now() > deadline) {
      for (int d = 0; d < devices; ++d) {
        if (codes[static_cast<size_t>(d)] >= 0) continue;
        kill(children[static_cast<size_t>(d)], SIGKILL);
        waitpid(children[static_cast<size_t>(d)], nullptr, 0);
        codes[static_cast<size_t>(d)] = 124;
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::vector<std::pair<std::string, int>> results;
  for (int d = 0; d < devices; ++d) {
    std::ifstream in(logs[static_cast<size_t>(d)]);
    std::stringstream text;
    text << in.rdbuf();
    std::remove(logs[static_cast<size_t>(d)].c_str());
    std::string out = text.str();
    if (codes[static_cast<size_t>(d)] == 124) {
      out += fmt::format("GPU {}: did not finish in {} s (a hang: a GPU or NCCL that does not answer)\n", d, timeout_s);
    }
    results.emplace_back(out, codes[static_cast<size_t>(d)]);
  }
  return results;
}

// Prints a GPU's table and summary; returns 0, or 2 after one error line.
int print_gpu_check(const GpuCheckReport& report, std::ostream& out, std::ostream& err) {
  out << format_gpu_check(report) << gpu_check_summary(report) << "\n";
  if (report.passed()) return 0;
  err << "moe_train: error: check-gpu failed: " << gpu_check_summary(report) << "\n";
  return kUserErrorExitCode;
}

}  // namespace

// moe_train check-gpu [CONFIG] [--section.key=value ...] [--world-size=N] [--device=N]
int run_check_gpu(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  ConfigArguments given;
  int device = -1;
  int64_t world_size = 0;
  bool for_training = false;
  std::string nccl;  // "RANKS:ID": a child that joins the collectives check (internal)
  for (const std::string& a : args) {
    if (a == "--for-training") {
      for_training = true;
    } else if (a.rfind("--nccl=", 0) == 0) {
      nccl = a.substr(7);
    } else if (a.rfind("--device=", 0) == 0) {
      char* end = nullptr;
      const long d = std::strtol(a.c_str() + 9, &end, 10);
      if (a.size() == 9 || *end != '\0' || d < 0) throw UserError(a + ": must be a GPU index, e.g. --device=0");
      device = static_cast<int>(d);
    } else if (a.rfind("--world-size=", 0) == 0) {
      world_size = parse_world_size(a.substr(13));
    } else {
      given.take(a, "check-gpu", "usage: moe_train check-gpu [CONFIG.toml] [--section.key=value ...] [--device=N]");
    }
  }
  if (given.config_path.empty() && !given.overrides.empty()) {
    throw UserError("check-gpu: --" + given.overrides[0] + " needs a config file to override; give CONFIG.toml first");
  }
  JobConfig cfg =
      given.config_path.empty() ? check_gpu_default_config() : load_config_file(given.config_path, given.overrides).cfg;
  // The refusals training makes, so that a config training would refuse never passes the check.
  validate_config(cfg);
  fill_derived_defaults(cfg);
  const LaunchEnv env = read_launch_env();
  const Layout layout = resolve_layout(cfg.distributed, world_size > 0 ? world_size : env.world_size);
  require_built_features(cfg, layout);
  if (for_training) {
    // As training will place the run: "cuda" without a GPU is refused, and
    // a run that will train on the CPU has no GPU to check.
    resolve_device(cfg.train);
    if (cfg.train.device == TrainDevice::kCpu) {
      out << "check-gpu: train.device resolves to \"cpu\" here: no GPU to check\n";
      return 0;
    }
  }

  if (const std::string missing = cuda_libraries_missing(); !missing.empty()) throw UserError("check-gpu: " + missing);
  const int devices = cuda_device_count();
  if (devices == 0) {
    throw UserError("check-gpu: no GPU can be used here (" + cuda_unavailable_reason() +
                    "): run it on a GPU node (docs/gpu.md)");
  }
  if (device >= devices) {
    throw UserError(
        fmt::format("check-gpu: --device={}, but {} GPU(s) are visible (0 to {})", device, devices, devices - 1));
  }
  if (!nccl.empty()) {
    const size_t colon = nccl.find(':');
    if (device < 0 || colon == std::string::npos) throw UserError("check-gpu: --nccl=RANKS:ID needs --device=N");
    const int ranks = std::atoi(nccl.substr(0, colon).c_str());
    return print_gpu_check(check_nccl(device, device, ranks, nccl.substr(colon + 1)), out, err);
  }
  if (device >= 0 || devices == 1) {
    const GpuCheckReport report = check_gpu(cfg, device >= 0 ? device : 0);
    remember_gpu_check(report);  // only a passed one
    return print_gpu_check(report, out, err);
  }
  // Every GPU on its own, then the collectives across them (only if all passed).
  std::string first_failure;
  auto collect = [&](const std::vector<std::pair<std::string, int>>& results, bool all_output) {
    for (int d = 0; d < devices; ++d) {
      const auto& [text, code] = results[static_cast<size_t>(d)];
      if (all_output || d == 0 || code != 0) out << text;
      if (code != 0 && first_failure.empty()) {
        first_failure =
            fmt::format("GPU {}: {}", d, last_line(text).empty() ? "exit " + std::to_string(code) : last_line(text));
      }
    }
  };
  collect(check_each_gpu(args, devices, 1800), true);
  if (first_failure.empty()) {
    std::vector<std::string> nccl_args = args;
    nccl_args.push_back(fmt::format("--nccl={}:{}", devices, new_nccl_check_id()));
    collect(check_each_gpu(nccl_args, devices, 300), false);  // every rank measures the same: rank 0 speaks
  }
  if (!first_failure.empty()) {
    err << "moe_train: error: check-gpu failed: " << first_failure << "\n";
    return kUserErrorExitCode;
  }
  out << fmt::format("check-gpu: all {} GPUs passed, and NCCL across them\n", devices);
  return 0;
}

}  // namespace moe
