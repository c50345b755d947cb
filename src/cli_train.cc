#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <optional>
#include <utility>

#include "src/cli_options.h"
#include "src/commands.h"
#include "src/config/derived.h"
#include "src/config/load.h"
#include "src/config/suggest.h"
#include "src/config/to_json.h"
#include "src/config/validate.h"
#include "src/core/cuda_device.h"
#include "src/core/user_error.h"
#include "src/model/params.h"
#include "src/parallel/launch_env.h"
#include "src/checkpoint/checkpoint.h"
#include "src/checkpoint/checkpoint_lock.h"
#include "src/train/dry_run.h"
#include "src/interop/export_hf.h"
#include "src/interop/import_hf.h"
#include "src/train/memory_fit.h"
#include "src/train/trainer.h"

namespace moe {
namespace {

const std::vector<std::string> kFlags = {
    "--print-config",  "--dry-run", "--world-size", "--export-hf",      "--init-from-hf",
    "--log-all-ranks", "--help",    "--version",    "--skip-gpu-check", "--archive-checkpoints"};

// --print-config and --dry-run: the resolved config, and the plan with
// whether it fits this machine's memory (host RAM or the GPU).
int print_config_and_plan(JobConfig& cfg, const CommandLine& cl, std::ostream& out) {
  std::optional<int64_t> world;
  if (cl.world_size > 0) world = cl.world_size;
  const Layout layout = resolve_layout(cfg.distributed, world);
  if (world) cfg.distributed.dp_shard = layout.dp_shard;
  if (cl.print_config) out << config_to_json(cfg).dump(2) << "\n";
  if (!cl.dry_run) return 0;
  // "auto" plans for the device a run would train on here.
  if (cfg.train.device == TrainDevice::kAuto) cfg.train.device = auto_device();
  const DryRunReport report = estimate_dry_run(cfg, layout);
  out << format_dry_run(report, cfg, cl.config_path);
  const bool on_gpu = cfg.train.device == TrainDevice::kCuda;
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
  return 0;
}

// --archive-checkpoints: the folder's checkpoints move aside, under its lock.
int archive_command(const JobConfig& cfg, std::ostream& out) {
  const std::string& dir = cfg.checkpoint.dir;
  const CheckpointLock lock(dir);  // not while a run uses the folder
  const std::string to = archive_checkpoints(dir);
  out << (to.empty() ? fmt::format("checkpoint.dir = \"{}\" holds no checkpoints: nothing to archive\n", dir)
                     : fmt::format("moved the checkpoints of {} and its latest to {}: a run with this "
                                   "checkpoint.dir now starts afresh\n",
                                   dir, to));
  return 0;
}

// --export-hf: the weights training would continue from (checkpoint.load_path,
// else the latest checkpoint in checkpoint.dir, else --init-from-hf's, else
// the initial weights), in Hugging Face's format.
int export_command(const JobConfig& cfg, const CommandLine& cl) {
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

// Training: the layout from the launcher's rank count, the device, then the loop.
int train_command(JobConfig& cfg, const CommandLine& cl) {
  const Layout layout = resolve_layout(cfg.distributed, read_launch_env().world_size);
  require_built_features(cfg, layout);
  resolve_device(cfg.train);
  if (cfg.train.device == TrainDevice::kCpu && cfg.train.mixed_precision == Precision::kBf16) {
    spdlog::info("train.mixed_precision = \"bf16\": the CPU backend computes in fp32 (bf16 applies on GPU)");
  }
  TrainOptions options;
  options.init_from_hf = cl.init_from_hf_dir;
  options.check_gpu = !cl.skip_gpu_check;
  return train(cfg, layout, options).exit_code;
}

}  // namespace

CommandLine parse_command_line(const std::vector<std::string>& args) {
  CommandLine cl;
  const std::pair<const char*, bool*> switches[] = {
      {"-h", &cl.help},
      {"--help", &cl.help},
      {"--version", &cl.version},
      {"--print-config", &cl.print_config},
      {"--dry-run", &cl.dry_run},
      {"--log-all-ranks", &cl.log_all_ranks},
      {"--skip-gpu-check", &cl.skip_gpu_check},
      {"--archive-checkpoints", &cl.archive_checkpoints},
  };
  for (const std::string& a : args) {
    bool* on = nullptr;
    for (const auto& [name, flag] : switches) {
      if (a == name) on = flag;
    }
    if (on != nullptr) {
      *on = true;
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

int run_train_command(const CommandLine& cl, std::ostream& out) {
  JobConfig cfg = load_checked_config(cl.config_path, cl.overrides);
  if (cl.print_config || cl.dry_run) return print_config_and_plan(cfg, cl, out);
  if (cl.archive_checkpoints) return archive_command(cfg, out);
  if (!cl.export_hf_dir.empty()) return export_command(cfg, cl);
  return train_command(cfg, cl);
}

}  // namespace moe
