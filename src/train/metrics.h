// Training metrics: one compact console line and one JSON object per logged
// step (JSONL), with the names KempnerForge users already chart.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace moe {

struct StepMetrics {
  int64_t step = 0;
  int64_t max_steps = 0;
  double loss = 0;       // train/loss: mean LM cross-entropy of the step
  double lr = 0;         // train/lr
  double grad_norm = 0;  // train/grad_norm, before clipping
  double tokens_per_sec = 0;
  double mfu = 0;  // fraction of the device's peak
  double step_time_sec = 0;
  double eta_sec = 0;
  int64_t peak_bytes = 0;  // mem/peak_bytes
  bool skipped = false;    // train/skipped: non-finite loss or gradient norm, update not applied
  // MoE (absent for dense models: has_moe = false)
  bool has_moe = false;
  double aux_loss = 0;        // moe/aux_loss: unweighted load-balance loss, summed over MoE layers
  double router_z_loss = 0;   // moe/router_z_loss, summed over layers
  double expert_balance = 0;  // moe/expert_balance: min / max over all (layer, expert) token counts
  double dropped_frac = 0;    // moe/dropped_frac
  std::vector<std::vector<int64_t>> expert_counts;  // moe/expert_counts: [layer][expert]
};

class MetricsLog {
 public:
  // jsonl_path empty: console only. A path that cannot be opened is a UserError.
  explicit MetricsLog(const std::string& jsonl_path);
  void write(const StepMetrics& m);
  void write_eval(int64_t step, double loss);

 private:
  std::ofstream jsonl_;
};

std::string format_console_line(const StepMetrics& m);

}  // namespace moe
