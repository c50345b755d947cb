#include "src/cli_options.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "src/config/derived.h"
#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/core/user_error.h"

namespace moe {

std::vector<std::string> join_option_values(const std::vector<std::string>& args) {
  static const std::vector<std::string> kValued = {
      "--world-size", "--export-hf",      "--init-from-hf", "--output", "--val-fraction", "--device", "--checkpoint",
      "--prompt",     "--max-new-tokens", "--temperature",  "--top-k",  "--top-p",        "--seed"};
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const bool takes_value = a.rfind("--", 0) == 0 && a.find('=') == std::string::npos &&
                             (a.find('.') != std::string::npos || std::count(kValued.begin(), kValued.end(), a) > 0);
    if (takes_value && i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) {
      out.push_back(a + "=" + args[++i]);
    } else {
      out.push_back(a);
    }
  }
  return out;
}

bool is_override(const std::string& a) {
  return a.rfind("--", 0) == 0 && a.find('.') != std::string::npos && a.find('=') != std::string::npos &&
         a.find('.') < a.find('=');
}

void ConfigArguments::take(const std::string& a, const std::string& command, const std::string& usage) {
  if (is_override(a)) {
    overrides.push_back(a.substr(2));
  } else if (a.rfind("-", 0) == 0) {
    throw UserError(fmt::format("{}: unknown option {}; {}", command, a, usage));
  } else if (config_path.empty()) {
    config_path = a;
  } else {
    throw UserError(
        fmt::format("{}: unexpected argument {} (the config is already {}); {}", command, a, config_path, usage));
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

void enter_bazel_workspace() {
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY"); ws && *ws && chdir(ws) != 0) {
    throw UserError(std::string("BUILD_WORKSPACE_DIRECTORY = ") + ws + ": cannot enter it; run from the workspace");
  }
}

// The config as the command line gives it: loaded with its overrides,
// checked against the rules, and with its derived defaults filled in.
JobConfig load_checked_config(const std::string& path, const std::vector<std::string>& overrides) {
  LoadedConfig loaded = load_config_file(path, overrides);
  if (!loaded.ignored_keys.empty()) {
    std::string keys;
    for (const auto& k : loaded.ignored_keys) keys += (keys.empty() ? "" : ", ") + k;
    spdlog::info("ignored (PyTorch-trainer settings with no meaning here): {}", keys);
  }
  validate_config(loaded.cfg);
  fill_derived_defaults(loaded.cfg);
  return loaded.cfg;
}

}  // namespace moe
