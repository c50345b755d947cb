#include "src/plot/plot.h"

#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "src/core/child_process.h"
#include "src/core/user_error.h"

namespace moe {

extern const char kPlotMetricsScript[];  // plot_metrics.py, embedded at build time

namespace {

// The first Python that has matplotlib: $MOE_TRAIN_PYTHON, python3 on PATH,
// then the system's /usr/bin/python3 (a pyenv or conda python3 on PATH often
// lacks the distribution's python3-matplotlib).
std::string python_with_matplotlib() {
  std::vector<std::string> candidates;
  if (const char* p = std::getenv("MOE_TRAIN_PYTHON"); p && *p) candidates.push_back(p);
  candidates.insert(candidates.end(), {"python3", "/usr/bin/python3"});
  for (const std::string& python : candidates) {
    if (run_process({python, "-c", "import matplotlib"}).code == 0) return python;
  }
  std::string tried;
  for (const std::string& c : candidates) tried += (tried.empty() ? "" : ", ") + c;
  throw UserError("plot: needs Python 3 with matplotlib, and none of " + tried +
                  " has it: install python3-matplotlib (Debian, Ubuntu; scripts/setup.sh does), or `pip install "
                  "matplotlib` and point MOE_TRAIN_PYTHON at that python");
}

}  // namespace

std::string metrics_file_of(const std::string& run_dir_or_jsonl) {
  const std::string give = "give a run's folder (its checkpoint.dir) or a metrics JSONL file (metrics.jsonl_path)";
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(run_dir_or_jsonl, ec)) {
    const std::string inside = (fs::path(run_dir_or_jsonl) / "metrics.jsonl").string();
    if (!fs::exists(inside, ec)) throw UserError("plot: " + run_dir_or_jsonl + " holds no metrics.jsonl: " + give);
    return inside;
  }
  if (!fs::exists(run_dir_or_jsonl, ec)) throw UserError("plot: " + run_dir_or_jsonl + " does not exist: " + give);
  return run_dir_or_jsonl;
}

std::string plot_metrics(const std::string& jsonl, const std::string& png) {
  const std::string python = python_with_matplotlib();
  const ProcessResult r = run_process({python, "-c", kPlotMetricsScript, jsonl, png, jsonl});
  if (r.code != 0) {
    const std::string why = last_line(r.output);
    throw UserError(
        fmt::format("plot: {}", why.empty() ? python + " exited with code " + std::to_string(r.code) : why));
  }
  return last_line(r.output);
}

}  // namespace moe
