// Helpers shared by the tests: running the command line in-process, and a
// fresh scratch folder (scratch_dir.h).
#pragma once

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

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

}  // namespace moe::test
