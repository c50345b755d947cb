// Helpers shared by the tests: running the command line in-process, its
// arguments and metrics, and a fresh scratch folder (scratch_dir.h).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "src/cli.h"
#include "tests/scratch_dir.h"

namespace moe::test {

struct CliResult {
  int code;
  std::string out, err;
};

inline CliResult run_cli_captured(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  const int code = moe::run_cli(args, out, err);
  return {code, out.str(), err.str()};
}

// Command-line arguments `a` followed by `more`.
inline std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& more) {
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

// step -> the JSON text of its loss in a metrics JSONL file (full precision:
// for bitwise comparisons).
inline std::map<int64_t, std::string> logged_losses(const std::string& jsonl) {
  std::map<int64_t, std::string> out;
  std::ifstream in(jsonl);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("train/loss")) out[j["step"].get<int64_t>()] = j["train/loss"].dump();
  }
  return out;
}

}  // namespace moe::test
