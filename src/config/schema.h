// The one description of every config key: its section, name, C++ field,
// and (for enumerations) its allowed values. TOML loading, CLI overrides,
// --print-config and "did you mean" all read this table; none keeps its own.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "src/config/job_config.h"

namespace moe {

using FieldRef = std::variant<int64_t*, double*, bool*, std::string*, std::optional<int64_t>*, std::array<double, 2>*>;

struct Field {
  std::string key;
  FieldRef ref;
  std::vector<std::string> choices;  // non-empty: the value must be one of these strings
};

struct Section {
  std::string name;
  std::vector<Field> fields;
  // Keys that only mean something to a PyTorch trainer: accepted, named once
  // in the "ignored" notice, and otherwise without effect.
  std::vector<std::string> ignored;
};

// The schema bound to the fields of `cfg`.
std::vector<Section> describe(JobConfig& cfg);

// Whole sections a KempnerForge file may carry that mean nothing here.
const std::vector<std::string>& ignored_sections();

// Name of the value's type as a user would write it ("integer", "float", ...).
std::string type_name(const FieldRef& ref);

}  // namespace moe
