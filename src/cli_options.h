// Pieces of the command line that every moe_train command shares.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "src/config/job_config.h"

namespace moe {

// `--key value` as well as `--key=value`: an option that takes a value (a
// config override --section.key, or one of the commands' valued options)
// followed by an argument that is not an option becomes one `--key=value`.
std::vector<std::string> join_option_values(const std::vector<std::string>& args);

// --section.key=value
bool is_override(const std::string& a);

// What every command takes besides its own options: one config file and
// --section.key=value overrides.
struct ConfigArguments {
  std::string config_path;
  std::vector<std::string> overrides;  // "section.key=value"

  // An argument none of the command's own options took: an override, else
  // the config file; another option or a second file is a UserError naming
  // `command` and ending with its `usage`.
  void take(const std::string& a, const std::string& command, const std::string& usage);
};

// --world-size's value: a positive rank count, else a UserError.
int64_t parse_world_size(const std::string& v);

// The config as the command line gives it: loaded with its overrides
// ("section.key=value"), checked against the rules, its derived defaults filled in.
JobConfig load_checked_config(const std::string& path, const std::vector<std::string>& overrides);

// Under `bazel run`, relative paths mean the workspace, not Bazel's runfiles tree.
void enter_bazel_workspace();

}  // namespace moe
