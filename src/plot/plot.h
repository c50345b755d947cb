// `moe_train plot`: one PNG of a run from its metrics.jsonl (loss, eval loss,
// learning rate, gradient norm, throughput, and each MoE layer's expert load
// over the steps), drawn by matplotlib through the system's Python. The
// drawing script is compiled into the binary, so nothing beside it is needed
// but Python 3 with matplotlib (Debian: python3-matplotlib).
#pragma once

#include <string>

namespace moe {

// RUN_DIR (its metrics.jsonl) or a metrics JSONL file.
std::string metrics_file_of(const std::string& run_dir_or_jsonl);

// Draws `jsonl` into `png` and returns what it drew, in words (steps, final
// losses, the MoE layers of the heatmap). A file with no training steps, or no
// Python with matplotlib, is a UserError naming the fix.
std::string plot_metrics(const std::string& jsonl, const std::string& png);

}  // namespace moe
