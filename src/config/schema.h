// The one description of every config key: its section, name, C++ field,
// and (for enumerations) its allowed values, the names of its enum. TOML
// loading, CLI overrides, --print-config and "did you mean" all read this
// table; none keeps its own.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "src/config/job_config.h"

namespace moe {

// A key whose value is one name of a list, seen through the names: the enum
// fields (Choice<E>), and string fields checked against a list known only at
// run time (model.moe_router: the table of routers).
struct ChoiceRef {
  // Implicit, so that the schema binds an enum field as it binds any other: &field.
  template <typename E>
  ChoiceRef(Choice<E>* field)
      : names(Choice<E>::names()),
        get([field] { return std::string(field->name()); }),
        set([field](const std::string& name) { *field = name; }) {}
  ChoiceRef(std::string* field, std::vector<std::string> allowed)
      : names(std::move(allowed)),
        get([field] { return *field; }),
        set([field](const std::string& name) { *field = name; }) {}

  std::vector<std::string> names;
  std::function<std::string()> get;
  std::function<void(const std::string&)> set;  // the name must be one of names
};

using FieldRef =
    std::variant<int64_t*, double*, bool*, std::string*, std::optional<int64_t>*, std::array<double, 2>*, ChoiceRef>;

struct Field {
  std::string key;
  FieldRef ref;
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
