// Choice<E>: a config value from a fixed set of names, held as the enum E.
//
// Each enum lists its values once, with the names a config file writes, in a
// specialisation of ChoiceNames beside it (src/config/enums.h). The schema
// takes the allowed names from there, the loader turns a name into the enum
// once, and the code reads the enum: it compares or switches on it, never on
// text. A Choice also compares with and takes a name, so that tests and
// defaults can say "bf16"; a name that is not in the list there is a bug in
// the code, not in a config (std::logic_error).
#pragma once

#include <cstddef>
#include <iterator>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace moe {

template <typename E>
struct ChoiceName {
  E value;
  const char* name;
};

// Specialised for each enum E:
//   static constexpr ChoiceName<E> kAll[] = {{E::kA, "a"}, {E::kB, "b"}};
// listing every enumerator in declaration order (so a value indexes its name).
template <typename E>
struct ChoiceNames;

template <typename E>
constexpr bool choice_names_in_order() {
  const auto& all = ChoiceNames<E>::kAll;
  for (size_t i = 0; i < std::size(all); ++i) {
    if (static_cast<size_t>(all[i].value) != i) return false;
  }
  return true;
}

template <typename E>
class Choice {
 public:
  constexpr Choice(E value) : value_(value) {}
  // A name written in code: an unknown one is a programming error.
  Choice& operator=(std::string_view name) {
    value_ = parse(name);
    return *this;
  }

  // Implicit, so that code compares with and switches on the enum directly.
  constexpr operator E() const { return value_; }
  const char* name() const { return kAll[static_cast<size_t>(value_)].name; }

  // Every name, in the enum's order: what the schema and its messages list.
  static std::vector<std::string> names() {
    std::vector<std::string> out;
    for (const auto& n : kAll) out.emplace_back(n.name);
    return out;
  }
  static std::optional<E> find(std::string_view name) {
    for (const auto& n : kAll) {
      if (name == n.name) return n.value;
    }
    return std::nullopt;
  }
  static std::string names_text() {  // "auto | cpu | cuda"
    std::string out;
    for (const auto& n : kAll) out += (out.empty() ? "" : " | ") + std::string(n.name);
    return out;
  }

  // Against a name, which must be one of names(): a misspelt name in code
  // throws rather than comparing unequal forever.
  friend bool operator==(const Choice& c, std::string_view name) { return c.value_ == parse(name); }
  friend bool operator==(std::string_view name, const Choice& c) { return c == name; }
  friend bool operator!=(const Choice& c, std::string_view name) { return !(c == name); }
  friend bool operator!=(std::string_view name, const Choice& c) { return !(c == name); }
  friend std::ostream& operator<<(std::ostream& out, const Choice& c) { return out << c.name(); }

 private:
  static constexpr const auto& kAll = ChoiceNames<E>::kAll;

  static_assert(choice_names_in_order<E>(), "ChoiceNames<E>::kAll must list E's values in declaration order");

  static E parse(std::string_view name) {
    if (const auto value = find(name)) return *value;
    throw std::logic_error("\"" + std::string(name) + "\" is not a name of this choice: " + names_text());
  }

  E value_;
};

// The value as a config file writes it, for messages: "bf16" with its quotes.
template <typename E>
std::string quoted(const Choice<E>& c) {
  return "\"" + std::string(c.name()) + "\"";
}

}  // namespace moe
