#include "src/train/metrics.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "src/core/user_error.h"
#include "src/train/human_units.h"

namespace moe {
namespace {

std::string moe_layer_tag(int64_t layer) { return fmt::format("moe/layer_{}", layer); }

// The step's scalars under their tags: the same in the JSONL file and in TensorBoard.
std::vector<TensorBoardScalar> tagged_scalars(const StepMetrics& m) {
  std::vector<TensorBoardScalar> s = {
      {"train/loss", m.loss},
      {"train/lr", m.lr},
      {"train/grad_norm", m.grad_norm},
      {"train/tokens_per_sec", m.tokens_per_sec},
      {"train/mfu", m.mfu},
      {"train/step_time_sec", m.step_time_sec},
      {"mem/peak_bytes", static_cast<double>(m.peak_bytes)},
  };
  if (m.skipped) s.push_back({"train/skipped", 1.0});
  if (!m.has_moe) return s;
  s.insert(s.end(), {{"moe/aux_loss", m.aux_loss},
                     {"moe/router_z_loss", m.router_z_loss},
                     {"moe/expert_balance", m.expert_balance},
                     {"moe/dropped_frac", m.dropped_frac}});
  for (const MoELayerMetrics& l : m.moe_layers) {
    const std::string layer = moe_layer_tag(l.layer);
    s.insert(s.end(), {{layer + "/aux_loss", l.aux_loss},
                       {layer + "/router_z_loss", l.router_z_loss},
                       {layer + "/expert_balance", l.expert_balance},
                       {layer + "/dropped_frac", l.dropped_frac}});
  }
  return s;
}

}  // namespace

MetricsFiles metrics_files_of(const JobConfig& cfg) {
  const MetricsConfig& m = cfg.metrics;
  MetricsFiles files;
  if (m.enable_jsonl) {
    files.jsonl_path =
        m.jsonl_path.empty() ? (std::filesystem::path(cfg.checkpoint.dir) / "metrics.jsonl").string() : m.jsonl_path;
  }
  if (m.enable_tensorboard) files.tensorboard_dir = m.tensorboard_dir;
  return files;
}

MetricsLog::MetricsLog(const MetricsFiles& files) {
  if (!files.tensorboard_dir.empty()) tensorboard_ = std::make_unique<TensorBoardWriter>(files.tensorboard_dir);
  const std::string& jsonl_path = files.jsonl_path;
  if (jsonl_path.empty()) return;
  const auto folder = std::filesystem::path(jsonl_path).parent_path();
  std::error_code ec;
  if (!folder.empty()) std::filesystem::create_directories(folder, ec);
  jsonl_.open(jsonl_path, std::ios::out | std::ios::app);
  if (!jsonl_) {
    throw UserError("metrics.jsonl_path = \"" + jsonl_path +
                    "\": cannot be opened for writing; point it at a writable file (or set "
                    "metrics.enable_jsonl = false)");
  }
}

std::string format_console_line(const StepMetrics& m) {
  std::string line = fmt::format("step {}/{} | loss {:.4f} | lr {:.2e} | grad_norm {:.3f}", m.step, m.max_steps, m.loss,
                                 m.lr, m.grad_norm);
  if (m.has_moe) {
    line += fmt::format(" | aux {:.4f} | balance {:.2f} | dropped {:.1f}%", m.aux_loss, m.expert_balance,
                        100.0 * m.dropped_frac);
  }
  line += fmt::format(" | {} tok/s | MFU {:.1f}% | mem {} | {:.2f} s/step | ETA {}", human_count(m.tokens_per_sec),
                      100.0 * m.mfu, human_bytes(m.peak_bytes), m.step_time_sec, human_duration(m.eta_sec));
  if (m.skipped) line += " | SKIPPED: non-finite loss or gradient norm, update not applied";
  return line;
}

void MetricsLog::write(const StepMetrics& m) {
  spdlog::info("{}", format_console_line(m));
  const std::vector<TensorBoardScalar> scalars = tagged_scalars(m);
  if (tensorboard_) {
    std::vector<TensorBoardCounts> loads;
    for (const MoELayerMetrics& l : m.moe_layers)
      loads.push_back({moe_layer_tag(l.layer) + "/expert_load", l.expert_counts});
    tensorboard_->write(m.step, scalars, loads);
  }
  if (!jsonl_.is_open()) return;
  nlohmann::ordered_json j;
  j["step"] = m.step;
  for (const TensorBoardScalar& s : scalars) {
    if (s.tag == "mem/peak_bytes") {
      j[s.tag] = m.peak_bytes;  // exact
    } else if (s.tag == "train/skipped") {
      j[s.tag] = true;
    } else {
      j[s.tag] = s.value;
    }
  }
  if (m.has_moe) {
    j["moe/expert_counts"] = m.expert_counts;
    for (const MoELayerMetrics& l : m.moe_layers) j[moe_layer_tag(l.layer) + "/expert_counts"] = l.expert_counts;
  }
  jsonl_ << j.dump() << "\n";
  jsonl_.flush();
}

void MetricsLog::write_eval(int64_t step, double loss) {
  spdlog::info("eval step {} | loss {:.4f} | perplexity {:.2f}", step, loss, std::exp(loss));
  if (tensorboard_) tensorboard_->write(step, {{"eval/loss", loss}, {"eval/perplexity", std::exp(loss)}});
  if (!jsonl_.is_open()) return;
  nlohmann::ordered_json j;
  j["step"] = step;
  j["eval/loss"] = loss;
  j["eval/perplexity"] = std::exp(loss);
  jsonl_ << j.dump() << "\n";
  jsonl_.flush();
}

}  // namespace moe
