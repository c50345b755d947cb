#include "src/cli.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdlib>

#include "src/config/derived.h"
#include "src/config/load.h"
#include "src/config/suggest.h"
#include "src/config/to_json.h"
#include "src/config/validate.h"
#include "src/core/build_info.h"
#include "src/core/cuda_device.h"
#include "src/core/log.h"
#include "src/core/user_error.h"
#include "src/parallel/launch_env.h"
#include "src/data/prepare.h"
#include "src/model/params.h"
#include "src/train/dry_run.h"
#include "src/train/checkpoint.h"
#include "src/train/export_hf.h"
#include "src/train/import_hf.h"
#include "src/train/step_runner.h"
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
    "  --log-all-ranks       info-level logs from every rank, not only rank 0\n"
    "  --version             version, commit, and the CUDA libraries built with and found\n"
    "  -h, --help            this text\n"
    "\n"
    "       moe_train prepare --output=DIR [--val-fraction=0.01] TEXT_FILE...\n"
    "\n"
    "Turns text files into a byte-level token dataset (DIR/train, DIR/val; vocab 257:\n"
    "256 bytes + end of document) to train on with data.dataset_path = \"DIR/train\".\n";

const std::vector<std::string> kFlags = {"--print-config",  "--dry-run",       "--world-size", "--export-hf",
                                         "--init-from-hf", "--log-all-ranks", "--help",
                                         "--version"};

// Under `bazel run`, relative paths mean the workspace, not Bazel's runfiles tree.
void enter_bazel_workspace() {
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY"); ws && *ws && chdir(ws) != 0) {
    throw UserError(std::string("BUILD_WORKSPACE_DIRECTORY = ") + ws + ": cannot enter it; run from the workspace");
  }
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
    } else if (a.rfind("--world-size=", 0) == 0) {
      cl.world_size = parse_world_size(a.substr(13));
    } else if (a.rfind("--export-hf=", 0) == 0 && a.size() > 12) {
      cl.export_hf_dir = a.substr(12);
    } else if (a.rfind("--init-from-hf=", 0) == 0 && a.size() > 15) {
      cl.init_from_hf_dir = a.substr(15);
    } else if (a.rfind("--", 0) == 0 && a.find('.') != std::string::npos && a.find('=') != std::string::npos &&
               a.find('.') < a.find('=')) {
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
    throw UserError("prepare: needs --output=DIR and at least one text file; e.g. moe_train prepare "
                    "--output=data/mytext notes/*.txt");
  }
  prepare_text_dataset(inputs, output, val_fraction);
  spdlog::info("prepared {} file(s) into {}/train and {}/val (byte-level, vocab {})", inputs.size(), output, output,
               kByteVocabSize);
  return 0;
}

int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  const LaunchEnv env = read_launch_env();
  try {
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
      out << version_text();
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
        const DryRunReport report = estimate_dry_run(cfg, layout);
        out << format_dry_run(report, cfg, cl.config_path);
        // On a GPU node, whether the plan fits this node's GPUs (the caching
        // allocator rounds blocks up, and CUDA and NCCL take some for themselves).
        if (cuda_device_count() > 0) {
          const double gib = 1024.0 * 1024 * 1024, have = cuda_device_memory_bytes(0) / gib;
          const double need = static_cast<double>(report.total_bytes) / gib;
          out << fmt::format("  this node's GPU 0 ({}): {}\n", cuda_device_description(0),
                             need <= 0.9 * have ? fmt::format("fits, {:.1f} GiB to spare", have - need)
                                                : fmt::format("does not fit ({:.1f} GiB planned, {:.1f} GiB there, "
                                                              "keeping 10% for CUDA and NCCL); lower "
                                                              "train.batch_size or shard more (dp_shard, ep, tp)",
                                                              need, have));
        }
      }
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
        const TrainPosition at = load_checkpoint(from, weights);
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
    if (cuda_device_count() > 0) {
      spdlog::warn("GPU found ({}), but the CUDA backend is not yet verified on a GPU (docs/gpu.md): training on "
                   "CPU",
                   cuda_device_description(0));
    }
    if (cfg.train.mixed_precision == "bf16") {
      spdlog::info("train.mixed_precision = \"bf16\": the CPU backend computes in fp32 (bf16 applies on GPU)");
    }
    return train(cfg, layout, cl.init_from_hf_dir).exit_code;
  } catch (const UserError& e) {
    if (env.rank == 0) err << "moe_train: error: " << e.what() << "\n";
    return kUserErrorExitCode;
  } catch (const NumericalFault& e) {
    // Every rank sees the same global loss and norm, so all stop here together.
    if (env.rank == 0) err << "moe_train: error: " << e.what() << "\n";
    return kNumericalFaultExitCode;
  }
}

}  // namespace moe
