#include "src/config/load.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <toml++/toml.h>

#include "src/config/schema.h"
#include "src/config/suggest.h"
#include "src/core/user_error.h"

namespace moe {
namespace {

// Where a value came from, for error messages: "file.toml:12:7" or "--model.dim".
std::string where(const std::string& source, const toml::node& node) {
  const auto& begin = node.source().begin;
  if (begin.line == 0) return source;
  return source + ":" + std::to_string(begin.line) + ":" + std::to_string(begin.column);
}

std::string show(const toml::node& node) {
  std::ostringstream out;
  if (auto* s = node.as_string()) {
    out << '"' << s->get() << '"';
  } else if (auto* a = node.as_array()) {
    out << *a;
  } else if (auto* t = node.as_table()) {
    out << "{table}";
    (void)t;
  } else {
    node.visit([&](auto&& v) { out << v; });
  }
  return out.str();
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

[[noreturn]] void wrong_type(const std::string& dotted, const std::string& at, const toml::node& node,
                             const FieldRef& ref) {
  throw UserError(dotted + " = " + show(node) + " (" + at + "): must be " + type_name(ref) +
                  "; fix the value's type in the config");
}

// Stores `node` into the field, checking its type and, for a choice, that it is one of the names.
void assign(const Field& field, const std::string& dotted, const std::string& at, const toml::node& node) {
  struct Assigner {
    const Field& field;
    const std::string& dotted;
    const std::string& at;
    const toml::node& node;

    void operator()(int64_t* p) const {
      if (!node.is_integer()) wrong_type(dotted, at, node, field.ref);
      *p = *node.value<int64_t>();
    }
    void operator()(std::optional<int64_t>* p) const {
      if (!node.is_integer()) wrong_type(dotted, at, node, field.ref);
      *p = *node.value<int64_t>();
    }
    void operator()(double* p) const {
      if (!node.is_number()) wrong_type(dotted, at, node, field.ref);
      *p = *node.value<double>();
    }
    void operator()(bool* p) const {
      if (!node.is_boolean()) wrong_type(dotted, at, node, field.ref);
      *p = *node.value<bool>();
    }
    void operator()(std::string* p) const {
      if (!node.is_string()) wrong_type(dotted, at, node, field.ref);
      *p = *node.value<std::string>();
    }
    void operator()(const ChoiceRef& choice) const {
      if (!node.is_string()) wrong_type(dotted, at, node, field.ref);
      const std::string v = *node.value<std::string>();
      const auto& names = choice.names;
      if (std::find(names.begin(), names.end(), v) == names.end()) {
        throw UserError(dotted + " = \"" + v + "\" (" + at + "): must be one of " + join(names, " | ") +
                        "; pick one of those");
      }
      choice.set(v);
    }
    void operator()(std::array<double, 2>* p) const {
      const auto* arr = node.as_array();
      if (!arr || arr->size() != 2 || !(*arr)[0].is_number() || !(*arr)[1].is_number()) {
        wrong_type(dotted, at, node, field.ref);
      }
      *p = {*(*arr)[0].value<double>(), *(*arr)[1].value<double>()};
    }
  };
  std::visit(Assigner{field, dotted, at, node}, field.ref);
}

std::vector<std::string> section_names(const std::vector<Section>& schema) {
  std::vector<std::string> names;
  for (const auto& s : schema) names.push_back(s.name);
  return names;
}

const Section* find_section(const std::vector<Section>& schema, const std::string& name) {
  for (const auto& s : schema) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

const Field* find_field(const Section& section, const std::string& key) {
  for (const auto& f : section.fields) {
    if (f.key == key) return &f;
  }
  return nullptr;
}

[[noreturn]] void unknown_section(const std::vector<Section>& schema, const std::string& name, const std::string& at) {
  std::string hint = closest_match(name, section_names(schema));
  throw UserError("unknown section [" + name + "] (" + at +
                  "): " + (hint.empty() ? "" : "did you mean [" + hint + "]? ") + "known sections are " +
                  join(section_names(schema), ", "));
}

[[noreturn]] void unknown_key(const std::vector<Section>& schema, const Section& section, const std::string& key,
                              const std::string& at) {
  std::vector<std::string> keys;
  for (const auto& f : section.fields) keys.push_back(f.key);
  std::string hint = closest_match(key, keys);
  std::string msg = "unknown key " + section.name + "." + key + " (" + at + "): ";
  if (!hint.empty()) {
    msg += "did you mean " + section.name + "." + hint + "?";
  } else {
    // The right name in the wrong section is a common slip.
    for (const auto& other : schema) {
      if (find_field(other, key)) {
        msg += "it belongs in [" + other.name + "], not [" + section.name + "]";
        throw UserError(msg);
      }
    }
    msg += "remove it; known keys of [" + section.name + "] are " + join(keys, ", ");
  }
  throw UserError(msg);
}

// Splits "section.key=value"; the key part must have exactly one dot.
void split_override(const std::string& text, std::string& section, std::string& key, std::string& value) {
  auto eq = text.find('=');
  auto dot = text.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot > eq || dot == 0 || dot + 1 == eq) {
    throw UserError("override --" + text + ": must look like --section.key=value, e.g. --optimizer.lr=3e-4");
  }
  section = text.substr(0, dot);
  key = text.substr(dot + 1, eq - dot - 1);
  value = text.substr(eq + 1);
}

// An override of a key that only a PyTorch trainer reads is accepted and
// named in `ignored`, as the same key in the file is.
void apply_override(std::vector<Section>& schema, const std::string& text, std::vector<std::string>& ignored) {
  std::string section_name, key, value;
  split_override(text, section_name, key, value);
  const std::string at = "command line";
  const Section* section = find_section(schema, section_name);
  if (!section) unknown_section(schema, section_name, at);
  const Field* field = find_field(*section, key);
  if (!field && std::find(section->ignored.begin(), section->ignored.end(), key) != section->ignored.end()) {
    ignored.push_back(section_name + "." + key);
    return;
  }
  if (!field) unknown_key(schema, *section, key, at);

  // The value is read as TOML, so 3e-4, true, [0.9, 0.95] and "x" mean what
  // they mean in a file; a string field also takes the bare text.
  toml::table parsed;
  bool ok = true;
  try {
    parsed = toml::parse("v = " + value);
  } catch (const toml::parse_error&) {
    ok = false;
  }
  const bool is_string_field =
      std::holds_alternative<std::string*>(field->ref) || std::holds_alternative<ChoiceRef>(field->ref);
  if (is_string_field && (!ok || !parsed["v"].is_string())) {
    toml::value<std::string> raw(value);
    assign(*field, section_name + "." + key, at, raw);
    return;
  }
  if (!ok) {
    throw UserError("override --" + text + ": the value is not valid TOML; must be " + type_name(field->ref) +
                    ", e.g. --" + section_name + "." + key + "=<value>");
  }
  assign(*field, section_name + "." + key, at, *parsed.get("v"));
}

}  // namespace

LoadedConfig load_config_text(const std::string& toml_text, const std::string& source,
                              const std::vector<std::string>& overrides) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    throw UserError(source + ":" + std::to_string(b.line) + ":" + std::to_string(b.column) +
                    ": TOML syntax error: " + std::string(e.description()) + "; fix the file at that place");
  }

  LoadedConfig out;
  std::vector<Section> schema = describe(out.cfg);
  const auto& skip_sections = ignored_sections();

  for (auto&& [section_key, section_node] : root) {
    const std::string section_name(section_key.str());
    const std::string at = where(source, section_node);
    if (std::find(skip_sections.begin(), skip_sections.end(), section_name) != skip_sections.end()) {
      out.ignored_keys.push_back("[" + section_name + "]");
      continue;
    }
    const Section* section = find_section(schema, section_name);
    if (!section) unknown_section(schema, section_name, at);
    const auto* table = section_node.as_table();
    if (!table) {
      throw UserError(section_name + " (" + at + "): must be a [" + section_name +
                      "] table, not a value; write its keys under a [" + section_name + "] header");
    }
    for (auto&& [key_, value] : *table) {
      const std::string key(key_.str());
      const std::string dotted = section_name + "." + key;
      const std::string value_at = where(source, value);
      if (const Field* field = find_field(*section, key)) {
        assign(*field, dotted, value_at, value);
      } else if (std::find(section->ignored.begin(), section->ignored.end(), key) != section->ignored.end()) {
        out.ignored_keys.push_back(dotted);
      } else {
        unknown_key(schema, *section, key, value_at);
      }
    }
  }

  for (const auto& o : overrides) apply_override(schema, o, out.ignored_keys);
  return out;
}

LoadedConfig load_config_file(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw UserError("config file " + path + ": is a directory; give a TOML file, e.g. " + path +
                    "/debug_moe.toml or configs/train/debug_moe.toml");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw UserError("config file " + path +
                    ": cannot be opened; check the path (relative paths are taken "
                    "from the directory you ran the command in)");
  }
  std::stringstream text;
  text << in.rdbuf();
  // No key at all would silently mean every default (a 6.7B-parameter model).
  bool has_content = false;
  std::istringstream lines(text.str());
  for (std::string line; !has_content && std::getline(lines, line);) {
    const size_t first = line.find_first_not_of(" \t\r");
    has_content = first != std::string::npos && line[first] != '#';
  }
  if (!has_content) {
    throw UserError("config file " + path +
                    ": is empty (no table or key); an empty config would train the 6.7B-parameter "
                    "defaults: start from configs/train/debug_moe.toml");
  }
  return load_config_text(text.str(), path, overrides);
}

}  // namespace moe
