#include "src/cli.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdlib>

#include "src/config/derived.h"
#include "src/config/load.h"
#include "src/config/suggest.h"
#include "src/config/to_json.h"
#include "src/config/validate.h"
#include "src/core/log.h"
#include "src/core/user_error.h"
#include "src/parallel/launch_env.h"
#include "src/train/dry_run.h"
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
    "  --log-all-ranks       info-level logs from every rank, not only rank 0\n"
    "  -h, --help            this text\n";

const std::vector<std::string> kFlags = {"--print-config", "--dry-run", "--world-size", "--log-all-ranks", "--help"};

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
    } else if (a == "--print-config") {
      cl.print_config = true;
    } else if (a == "--dry-run") {
      cl.dry_run = true;
    } else if (a == "--log-all-ranks") {
      cl.log_all_ranks = true;
    } else if (a.rfind("--world-size=", 0) == 0) {
      cl.world_size = parse_world_size(a.substr(13));
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
  if (cl.config_path.empty() && !cl.help) {
    throw UserError("no config file given: run moe_train CONFIG.toml, e.g. configs/train/debug_moe.toml");
  }
  return cl;
}

int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  const LaunchEnv env = read_launch_env();
  try {
    const CommandLine cl = parse_command_line(args);
    init_logging(static_cast<int>(env.rank), cl.log_all_ranks);
    if (cl.help) {
      out << kUsage;
      return 0;
    }
    // Under `bazel run`, relative paths mean the workspace, not Bazel's runfiles tree.
    if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY"); ws && *ws && chdir(ws) != 0) {
      throw UserError(std::string("BUILD_WORKSPACE_DIRECTORY = ") + ws + ": cannot enter it; run from the workspace");
    }

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
      if (cl.dry_run) out << format_dry_run(estimate_dry_run(cfg, layout), cfg, cl.config_path);
      return 0;
    }

    const Layout layout = resolve_layout(cfg.distributed, env.world_size);
    require_built_features(cfg, layout);
    if (cfg.train.mixed_precision == "bf16") {
      spdlog::info("train.mixed_precision = \"bf16\": the CPU backend computes in fp32 (bf16 applies on GPU)");
    }
    train(cfg, layout);
    return 0;
  } catch (const UserError& e) {
    if (env.rank == 0) err << "moe_train: error: " << e.what() << "\n";
    return kUserErrorExitCode;
  }
}

}  // namespace moe
