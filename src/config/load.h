// Reading a JobConfig from a TOML file plus command-line overrides.
//
// Every problem is a UserError with one line: the key (as `section.key`, the
// same spelling an override uses), where it was set, the value, the rule and
// the fix. Unknown keys get a "did you mean"; PyTorch-only keys are collected
// for a single "ignored" notice.
#pragma once

#include <string>
#include <vector>

#include "src/config/job_config.h"

namespace moe {

struct LoadedConfig {
  JobConfig cfg;
  std::vector<std::string> ignored_keys;  // "section.key" or "[section]", sorted by section then key
};

// `overrides` are "section.key=value" strings (the leading "--" removed);
// values use TOML syntax, and strings may be written without quotes.
LoadedConfig load_config_file(const std::string& path, const std::vector<std::string>& overrides);

// Same as load_config_file on text already in memory; `source` names it in errors.
LoadedConfig load_config_text(const std::string& toml_text, const std::string& source,
                              const std::vector<std::string>& overrides);

}  // namespace moe
