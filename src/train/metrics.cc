#include "src/train/metrics.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "src/core/user_error.h"

namespace moe {
namespace {

std::string human_bytes(int64_t b) {
  const double x = static_cast<double>(b);
  if (x >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", x / (1024.0 * 1024 * 1024));
  return fmt::format("{:.0f} MiB", x / (1024.0 * 1024));
}

std::string human_duration(double sec) {
  const auto s = static_cast<int64_t>(std::llround(std::max(0.0, sec)));
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

std::string human_rate(double r) {
  if (r >= 1e6) return fmt::format("{:.2f}M", r / 1e6);
  if (r >= 1e3) return fmt::format("{:.1f}k", r / 1e3);
  return fmt::format("{:.0f}", r);
}

}  // namespace

MetricsLog::MetricsLog(const std::string& jsonl_path) {
  if (jsonl_path.empty()) return;
  const auto folder = std::filesystem::path(jsonl_path).parent_path();
  std::error_code ec;
  if (!folder.empty()) std::filesystem::create_directories(folder, ec);
  jsonl_.open(jsonl_path, std::ios::out | std::ios::app);
  if (!jsonl_) {
    throw UserError("metrics.jsonl_path = \"" + jsonl_path +
                    "\": cannot be opened for writing; point it at a writable file");
  }
}

std::string format_console_line(const StepMetrics& m) {
  std::string line = fmt::format("step {}/{} | loss {:.4f} | lr {:.2e} | grad_norm {:.3f}", m.step, m.max_steps, m.loss,
                                 m.lr, m.grad_norm);
  if (m.has_moe) {
    line += fmt::format(" | aux {:.4f} | balance {:.2f} | dropped {:.1f}%", m.aux_loss, m.expert_balance,
                        100.0 * m.dropped_frac);
  }
  line += fmt::format(" | {} tok/s | MFU {:.1f}% | mem {} | {:.2f} s/step | ETA {}", human_rate(m.tokens_per_sec),
                      100.0 * m.mfu, human_bytes(m.peak_bytes), m.step_time_sec, human_duration(m.eta_sec));
  if (m.skipped) line += " | SKIPPED: non-finite loss or gradient norm, update not applied";
  return line;
}

void MetricsLog::write(const StepMetrics& m) {
  spdlog::info("{}", format_console_line(m));
  if (!jsonl_.is_open()) return;
  nlohmann::ordered_json j;
  j["step"] = m.step;
  j["train/loss"] = m.loss;
  j["train/lr"] = m.lr;
  j["train/grad_norm"] = m.grad_norm;
  j["train/tokens_per_sec"] = m.tokens_per_sec;
  j["train/mfu"] = m.mfu;
  j["train/step_time_sec"] = m.step_time_sec;
  j["mem/peak_bytes"] = m.peak_bytes;
  if (m.skipped) j["train/skipped"] = true;
  if (m.has_moe) {
    j["moe/aux_loss"] = m.aux_loss;
    j["moe/router_z_loss"] = m.router_z_loss;
    j["moe/expert_balance"] = m.expert_balance;
    j["moe/dropped_frac"] = m.dropped_frac;
    j["moe/expert_counts"] = m.expert_counts;
  }
  jsonl_ << j.dump() << "\n";
  jsonl_.flush();
}

void MetricsLog::write_eval(int64_t step, double loss) {
  spdlog::info("eval step {} | loss {:.4f} | perplexity {:.2f}", step, loss, std::exp(loss));
  if (!jsonl_.is_open()) return;
  nlohmann::ordered_json j;
  j["step"] = step;
  j["eval/loss"] = loss;
  j["eval/perplexity"] = std::exp(loss);
  jsonl_ << j.dump() << "\n";
  jsonl_.flush();
}

}  // namespace moe
