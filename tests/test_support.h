// Helpers shared by the tests: running the command line in-process, and a
// fresh scratch folder under Bazel's TEST_TMPDIR.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "src/cli.h"

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

// An empty folder `name` under TEST_TMPDIR (or /tmp outside Bazel).
inline std::string fresh_dir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(base ? base : "/tmp") + "/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace moe::test
