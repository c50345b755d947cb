#include "src/plot/plot.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "src/core/user_error.h"

extern char** environ;

namespace moe {

extern const char kPlotMetricsScript[];  // plot_metrics.py, embedded at build time

namespace {

struct ProcessResult {
  int code = -1;
  std::string output;  // stdout and stderr together
};

// Runs argv[0] (looked up on PATH) and collects what it prints.
ProcessResult run_process(const std::vector<std::string>& argv) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return {};
  posix_spawn_file_actions_t io;
  posix_spawn_file_actions_init(&io);
  posix_spawn_file_actions_adddup2(&io, pipe_fds[1], 1);
  posix_spawn_file_actions_adddup2(&io, pipe_fds[1], 2);
  posix_spawn_file_actions_addclose(&io, pipe_fds[0]);
  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (std::string& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, cargv[0], &io, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&io);
  close(pipe_fds[1]);
  ProcessResult result;
  char buffer[4096];
  for (ssize_t n; (n = read(pipe_fds[0], buffer, sizeof buffer)) > 0;) result.output.append(buffer, n);
  close(pipe_fds[0]);
  if (rc != 0) return result;
  int status = 0;
  waitpid(pid, &status, 0);
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

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

std::string last_line(const std::string& text) {
  const std::string trimmed = text.substr(0, text.find_last_not_of('\n') + 1);
  return trimmed.substr(trimmed.find_last_of('\n') + 1);
}

}  // namespace

std::string metrics_file_of(const std::string& run_dir_or_jsonl) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(run_dir_or_jsonl, ec)) {
    const std::string inside = (fs::path(run_dir_or_jsonl) / "metrics.jsonl").string();
    if (!fs::exists(inside, ec)) {
      throw UserError(
          fmt::format("plot: {} holds no metrics.jsonl: give a run's folder (its checkpoint.dir) or a "
                      "metrics JSONL file (metrics.jsonl_path)",
                      run_dir_or_jsonl));
    }
    return inside;
  }
  if (!fs::exists(run_dir_or_jsonl, ec)) {
    throw UserError(
        fmt::format("plot: {} does not exist: give a run's folder (its checkpoint.dir) or a metrics "
                    "JSONL file (metrics.jsonl_path)",
                    run_dir_or_jsonl));
  }
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
