// Running another program and reading what it printed: the plotting script,
// and the per-GPU children of check-gpu.
#pragma once

#include <string>
#include <vector>

namespace moe {

struct ProcessResult {
  int code = -1;       // exit code; 128 + signal when killed; -1 when it could not start
  std::string output;  // stdout and stderr together
};

// Runs argv[0] (looked up on PATH), waits for it and collects what it prints.
ProcessResult run_process(const std::vector<std::string>& argv);

// The last non-empty line of a program's output (its summary or its error).
std::string last_line(const std::string& text);

}  // namespace moe
