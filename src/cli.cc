#include "src/cli.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>
#include <sstream>
#include <thread>

#include "src/config/derived.h"
#include "src/config/load.h"
#include "src/config/suggest.h"
#include "src/config/to_json.h"
#include "src/config/validate.h"
#include "src/core/build_info.h"
#include "src/core/cuda_device.h"
#include "src/core/log.h"
#include "src/core/user_error.h"
#include "src/parallel/communicator.h"
#include "src/parallel/launch_env.h"
#include "src/data/prepare.h"
#include "src/linked_libraries.h"
#include "src/model/params.h"
#include "src/train/checkpoint_lock.h"
#include "src/train/dry_run.h"
#include "src/train/memory_fit.h"
#include "src/train/checkpoint.h"
#include "src/train/export_hf.h"
#include "src/train/gpu_check.h"
#include "src/train/gpu_check_cache.h"
#include "src/train/gpu_check_nccl.h"
#include "src/train/import_hf.h"
#include "src/train/trainer.h"

namespace moe {
namespace {

const char* kUsage =
    "usage: moe_train CONFIG.toml [--section.key=value ...] [options]\n"
    "\n"
    "Trains the Mixture-of-Experts model that CONFIG.toml describes.\n"
    "\n"
    "options:\n"
    "  --section.key=value   override one config key, e.g. --optimizer.lr=3e-4\n"
    "  --print-config        print the resolved config as JSON and exit\n"
    "  --dry-run             print parameters, FLOPs and memory per rank, and exit\n"
    "  --world-size=N        rank count assumed by --dry-run/--print-config to resolve\n"
    "                        distributed.dp_shard = -1 (default: the layout's product)\n"
    "  --export-hf=DIR       write the model's weights as Hugging Face model.safetensors +\n"
    "                        config.json (Llama, Mixtral or Qwen2-MoE) and exit\n"
    "  --init-from-hf=DIR    start training from the weights of a Hugging Face checkpoint\n"
    "                        folder of this model's shape (config.json + model.safetensors\n"
    "                        or its index; F32, BF16 or F16); a resumed checkpoint wins\n"
    "  --archive-checkpoints move the checkpoints in checkpoint.dir (and its latest) to\n"
    "                        checkpoint.dir/archive/<UTC time>/ and exit: the next run\n"
    "                        there starts afresh, and nothing is deleted\n"
    "  --log-all-ranks       info-level logs from every rank, not only rank 0\n"
    "  --skip-gpu-check      train on CUDA without first checking the GPU (see check-gpu)\n"
    "  --version             version, commit, and the libraries built with and loaded (CUDA, MPI, BLAS)\n"
    "  -h, --help            this text\n"
    "\n"
    "       moe_train prepare --output=DIR [--val-fraction=0.01] TEXT_FILE...\n"
    "\n"
    "Turns text files into a byte-level token dataset (DIR/train, DIR/val; vocab 257:\n"
    "256 bytes + end of document) to train on with data.dataset_path = \"DIR/train\".\n"
    "\n"
    "       moe_train check-gpu [CONFIG.toml] [--section.key=value ...] [--device=N]\n"
    "                           [--world-size=N] [--for-training]\n"
    "\n"
    "Checks every visible GPU (or GPU N): every op against the CPU reference at small\n"
    "shapes and at the config's layer shapes, in fp32 and bf16; a CUDA graph replay\n"
    "against eager launches, bit for bit; 5 training steps of the config's model,\n"
    "shrunk, against the CPU. Prints a table and one line per GPU; exits 0 when all\n"
    "pass, 2 naming the first failure. A CUDA run makes the same check before its\n"
    "first step, once per binary, GPU model, driver and CUDA runtime (cached).\n"
    "The config is refused as training refuses it (--world-size=N: the job's rank\n"
    "count). --for-training: check only if training would use a GPU here.\n";

const std::vector<std::string> kFlags = {
    "--print-config",  "--dry-run", "--world-size", "--export-hf",      "--init-from-hf",
    "--log-all-ranks", "--help",    "--version",    "--skip-gpu-check", "--archive-checkpoints"};

// Under `bazel run`, relative paths mean the workspace, not Bazel's runfiles tree.
void enter_bazel_workspace() {
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY"); ws && *ws && chdir(ws) != 0) {
    throw UserError(std::string("BUILD_WORKSPACE_DIRECTORY = ") + ws + ": cannot enter it; run from the workspace");
  }
}

// --section.key=value
bool is_override(const std::string& a) {
  return a.rfind("--", 0) == 0 && a.find('.') != std::string::npos && a.find('=') != std::string::npos &&
         a.find('.') < a.find('=');
}

int64_t parse_world_size(const std::string& v) {
  char* end = nullptr;
  long long n = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || n <= 0) {
    throw UserError("--world-size=" + v + ": must be a positive integer rank count, e.g. --world-size=32");
  }
  return n;
}

}  // namespace

CommandLine parse_command_line(const std::vector<std::string>& args) {
  CommandLine cl;
  for (const std::string& a : args) {
    if (a == "-h" || a == "--help") {
      cl.help = true;
    } else if (a == "--version") {
      cl.version = true;
    } else if (a == "--print-config") {
      cl.print_config = true;
    } else if (a == "--dry-run") {
      cl.dry_run = true;
    } else if (a == "--log-all-ranks") {
      cl.log_all_ranks = true;
    } else if (a == "--skip-gpu-check") {
      cl.skip_gpu_check = true;
    } else if (a == "--archive-checkpoints") {
      cl.archive_checkpoints = true;
    } else if (a.rfind("--world-size=", 0) == 0) {
      cl.world_size = parse_world_size(a.substr(13));
    } else if (a.rfind("--export-hf=", 0) == 0 && a.size() > 12) {
      cl.export_hf_dir = a.substr(12);
    } else if (a.rfind("--init-from-hf=", 0) == 0 && a.size() > 15) {
      cl.init_from_hf_dir = a.substr(15);
    } else if (is_override(a)) {
      cl.overrides.push_back(a.substr(2));
    } else if (a.rfind("-", 0) == 0) {
      std::string name = a.substr(0, a.find('='));
      std::string hint = closest_match(name, kFlags);
      throw UserError("unknown option " + a + ": " + (hint.empty() ? "" : "did you mean " + hint + "? ") +
                      "overrides look like --section.key=value; see moe_train --help");
    } else if (cl.config_path.empty()) {
      cl.config_path = a;
    } else {
      throw UserError("unexpected argument " + a + " (the config is already " + cl.config_path +
                      "): give one config file; see moe_train --help");
    }
  }
  if (cl.config_path.empty() && !cl.help && !cl.version) {
    throw UserError("no config file given: run moe_train CONFIG.toml, e.g. configs/train/debug_moe.toml");
  }
  return cl;
}

int run_prepare(const std::vector<std::string>& args) {
  std::string output;
  double val_fraction = 0.01;
  std::vector<std::string> inputs;
  for (const std::string& a : args) {
    if (a.rfind("--output=", 0) == 0) {
      output = a.substr(9);
    } else if (a.rfind("--val-fraction=", 0) == 0) {
      char* end = nullptr;
      val_fraction = std::strtod(a.c_str() + 15, &end);
      if (*end != '\0' || !(val_fraction >= 0 && val_fraction < 1)) {
        throw UserError(a + ": must be a number in [0, 1), e.g. --val-fraction=0.01");
      }
    } else if (a.rfind("-", 0) == 0) {
      throw UserError("prepare: unknown option " + a + "; usage: moe_train prepare --output=DIR TEXT_FILE...");
    } else {
      inputs.push_back(a);
    }
  }
  if (output.empty() || inputs.empty()) {
    throw UserError(
        "prepare: needs --output=DIR and at least one text file; e.g. moe_train prepare "
        "--output=data/mytext notes/*.txt");
  }
  prepare_text_dataset(inputs, output, val_fraction);
  spdlog::info("prepared {} file(s) into {}/train and {}/val (byte-level, vocab {})", inputs.size(), output, output,
               kByteVocabSize);
  return 0;
}

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

// The last line of a child's output (its summary or its error).
std::string last_line(const std::string& text) {
  const std::string trimmed = text.substr(0, text.find_last_not_of('\n') + 1);
  return trimmed.substr(trimmed.find_last_of('\n') + 1);
}

}  // namespace

// moe_train check-gpu [CONFIG] [--section.key=value ...] [--world-size=N] [--device=N]
int run_check_gpu(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  std::string config_path;
  std::vector<std::string> overrides;
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
    } else if (is_override(a)) {
      overrides.push_back(a.substr(2));
    } else if (a.rfind("-", 0) == 0) {
      throw UserError("check-gpu: unknown option " + a +
                      "; usage: moe_train check-gpu [CONFIG.toml] [--section.key=value ...] [--device=N]");
    } else if (config_path.empty()) {
      config_path = a;
    } else {
      throw UserError("check-gpu: unexpected argument " + a + " (the config is already " + config_path + ")");
    }
  }
  if (config_path.empty() && !overrides.empty()) {
    throw UserError("check-gpu: --" + overrides[0] + " needs a config file to override; give CONFIG.toml first");
  }
  JobConfig cfg = config_path.empty() ? check_gpu_default_config() : load_config_file(config_path, overrides).cfg;
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
    if (cfg.train.device == "cpu") {
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

namespace {
// The error line of the last run_cli on this rank that it did not print (a
// rank other than 0 leaves the printing to rank 0).
thread_local std::string unshown_error;
}  // namespace

int run_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  const int code = run_cli(args, out, err);
  // Peers that did not fail would keep this rank in MPI_Finalize: after 10 s,
  // this rank says why and ends the job (a shared error ends it sooner).
  if (code == kUserErrorExitCode && read_launch_env().world_size > 1) {
    abort_job_unless_exited(10, kUserErrorExitCode, unshown_error);
  }
  return code;
}

int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  unshown_error.clear();
  const LaunchEnv env = read_launch_env();
  try {
    if (!args.empty() && args[0] == "check-gpu") {
      init_logging(static_cast<int>(env.rank));
      enter_bazel_workspace();
      return run_check_gpu(std::vector<std::string>(args.begin() + 1, args.end()), out, err);
    }
    if (!args.empty() && args[0] == "prepare") {
      init_logging(static_cast<int>(env.rank));
      enter_bazel_workspace();
      return run_prepare(std::vector<std::string>(args.begin() + 1, args.end()));
    }
    const CommandLine cl = parse_command_line(args);
    init_logging(static_cast<int>(env.rank), cl.log_all_ranks);
    if (cl.help) {
      out << kUsage;
      return 0;
    }
    if (cl.version) {
      out << version_text() << linked_library_lines();
      return 0;
    }
    enter_bazel_workspace();

    LoadedConfig loaded = load_config_file(cl.config_path, cl.overrides);
    JobConfig& cfg = loaded.cfg;
    if (!loaded.ignored_keys.empty()) {
      std::string keys;
      for (const auto& k : loaded.ignored_keys) keys += (keys.empty() ? "" : ", ") + k;
      spdlog::info("ignored (PyTorch-trainer settings with no meaning here): {}", keys);
    }
    validate_config(cfg);
    fill_derived_defaults(cfg);

    if (cl.print_config || cl.dry_run) {
      std::optional<int64_t> world;
      if (cl.world_size > 0) world = cl.world_size;
      const Layout layout = resolve_layout(cfg.distributed, world);
      if (world) cfg.distributed.dp_shard = layout.dp_shard;
      if (cl.print_config) out << config_to_json(cfg).dump(2) << "\n";
      if (cl.dry_run) {
        // "auto" plans for the device a run would train on here.
        if (cfg.train.device == "auto") cfg.train.device = auto_device();
        const DryRunReport report = estimate_dry_run(cfg, layout);
        out << format_dry_run(report, cfg, cl.config_path);
        const bool on_gpu = cfg.train.device == "cuda";
        if (on_gpu && cuda_device_count() == 0) {
          out << "  no GPU here to compare the plan with: run --dry-run on a GPU node to see whether it fits\n";
        } else if (const auto budget = memory_budget(on_gpu, 0)) {
          const int64_t need = on_gpu ? report.gpu_total_bytes : report.total_bytes;
          if (const std::string problem = memory_fit_problem(need, *budget); !problem.empty()) {
            out.flush();
            throw UserError(problem);
          }
          out << "  " << memory_fit_summary(need, *budget) << "\n";
        }
      }
      return 0;
    }

    if (cl.archive_checkpoints) {
      const std::string& dir = cfg.checkpoint.dir;
      const CheckpointLock lock(dir);  // not while a run uses the folder
      const std::string to = archive_checkpoints(dir);
      out << (to.empty() ? fmt::format("checkpoint.dir = \"{}\" holds no checkpoints: nothing to archive\n", dir)
                         : fmt::format("moved the checkpoints of {} and its latest to {}: a run with this "
                                       "checkpoint.dir now starts afresh\n",
                                       dir, to));
      return 0;
    }

    if (!cl.export_hf_dir.empty()) {
      // The weights training would continue from: checkpoint.load_path, else
      // the latest checkpoint in checkpoint.dir, else --init-from-hf's, else
      // the initial weights.
      TensorPool pool;
      ParamStore params(cfg.model, pool);
      params.init(cfg.model, static_cast<uint64_t>(cfg.train.seed));
      std::string from = cfg.checkpoint.load_path;
      if (from.empty()) from = latest_checkpoint(cfg.checkpoint.dir);
      if (!from.empty()) {
        std::vector<StateTensor> weights;
        for (Param& p : params.all()) weights.push_back({p.spec.name, p.place, p.shard, true});
        const TrainPosition at = load_checkpoint(from, weights, LoadScope::kWeights);
        spdlog::info("weights from {} (step {})", from, at.step);
      } else if (!cl.init_from_hf_dir.empty()) {
        import_hf(cfg.model, cl.init_from_hf_dir, params);
        spdlog::info("weights from the Hugging Face checkpoint {}", cl.init_from_hf_dir);
      } else {
        spdlog::info("no checkpoint in {}: exporting the initial weights", cfg.checkpoint.dir);
      }
      export_hf(cfg.model, params, cl.export_hf_dir);
      spdlog::info("exported {} to {} ({} parameters)", hf_architecture(cfg.model), cl.export_hf_dir, params.numel());
      return 0;
    }

    const Layout layout = resolve_layout(cfg.distributed, env.world_size);
    require_built_features(cfg, layout);
    resolve_device(cfg.train);
    if (cfg.train.device == "cpu" && cfg.train.mixed_precision == "bf16") {
      spdlog::info("train.mixed_precision = \"bf16\": the CPU backend computes in fp32 (bf16 applies on GPU)");
    }
    TrainOptions options;
    options.init_from_hf = cl.init_from_hf_dir;
    options.check_gpu = !cl.skip_gpu_check;
    return train(cfg, layout, options).exit_code;
  } catch (const UserError& e) {
    if (env.rank == 0) err << "moe_train: error: " << e.what() << "\n";
    unshown_error = env.rank == 0 ? "" : fmt::format("moe_train: error: rank {}: {}", env.rank, e.what());
    return kUserErrorExitCode;
  } catch (const NumericalFault& e) {
    // Every rank sees the same global loss and norm, so all stop here together.
    if (env.rank == 0) err << "moe_train: error: " << e.what() << "\n";
    return kNumericalFaultExitCode;
  } catch (const std::bad_alloc&) {
    // Sizes this machine cannot hold (a huge model, batch or vocabulary): a
    // message and the user-error code, not an abort. Any rank may be the one.
    err << "moe_train: error: out of host memory while allocating the run's buffers: the config asks for more than "
           "this machine has; check the sizes with --dry-run, then lower train.batch_size or the model's sizes, or "
           "spread it over more ranks\n";
    return kUserErrorExitCode;
  }
}

}  // namespace moe
