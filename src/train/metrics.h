// Training metrics: one compact console line per logged step, and on rank 0
// one JSON object per logged step (JSONL) and TensorBoard event files, with
// the names KempnerForge users already chart.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <memory>
#include <vector>

#include "src/config/job_config.h"
#include "src/train/tensorboard_events.h"

namespace moe {

// One MoE layer's figures of a step (moe/layer_<layer>/...).
struct MoELayerMetrics {
  int64_t layer = 0;                   // the model block it sits in
  double aux_loss = 0;                 // its unweighted load-balance loss
  double router_z_loss = 0;            // its router z-loss
  double expert_balance = 0;           // min / max of its experts' token counts
  double dropped_frac = 0;             // the share of its (token, slot) pairs over capacity
  std::vector<int64_t> expert_counts;  // pairs routed to each expert
};

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
  std::vector<std::vector<int64_t>> expert_counts;  // moe/expert_counts: [MoE layer][expert], as moe_layers
  std::vector<MoELayerMetrics> moe_layers;          // in block order
};

// Where a run's metrics files go (empty: none).
struct MetricsFiles {
  std::string jsonl_path;       // metrics.jsonl_path, else <checkpoint.dir>/metrics.jsonl; none when turned off
  std::string tensorboard_dir;  // metrics.tensorboard_dir when enable_tensorboard
};
MetricsFiles metrics_files_of(const JobConfig& cfg);

class MetricsLog {
 public:
  // The console, and the files named (rank 0 passes metrics_files_of(cfg),
  // the others nothing). A file that cannot be written is a UserError.
  explicit MetricsLog(const MetricsFiles& files);
  void write(const StepMetrics& m);
  void write_eval(int64_t step, double loss);
  // The TensorBoard event file being written ("" without one).
  std::string tensorboard_file() const { return tensorboard_ ? tensorboard_->path() : ""; }

 private:
  std::ofstream jsonl_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
};

std::string format_console_line(const StepMetrics& m);

}  // namespace moe
