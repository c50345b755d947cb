#include <fmt/format.h>

#include <filesystem>

#include "src/commands.h"
#include "src/core/user_error.h"
#include "src/plot/plot.h"

namespace moe {

int run_plot(const std::vector<std::string>& args, std::ostream& out) {
  const char* usage = "usage: moe_train plot RUN_DIR_OR_METRICS_JSONL [--output=PNG]";
  std::string input, png;
  for (const std::string& a : args) {
    if (a.rfind("--output=", 0) == 0 && a.size() > 9) {
      png = a.substr(9);
    } else if (a.rfind("-", 0) == 0) {
      throw UserError(fmt::format("plot: unknown option {}; {}", a, usage));
    } else if (input.empty()) {
      input = a;
    } else {
      throw UserError(fmt::format("plot: unexpected argument {} (the run is already {}); {}", a, input, usage));
    }
  }
  if (input.empty()) throw UserError(fmt::format("plot: give a run's folder or its metrics file; {}", usage));
  const std::string jsonl = metrics_file_of(input);
  if (png.empty()) png = std::filesystem::path(jsonl).replace_extension(".png").string();
  const std::string drawn = plot_metrics(jsonl, png);
  out << fmt::format("plot: wrote {} from {}: {}\n", png, jsonl, drawn);
  return 0;
}

}  // namespace moe
