#include "src/config/to_json.h"

#include "src/config/schema.h"

namespace moe {
namespace {

nlohmann::ordered_json value_of(const std::optional<int64_t>* p) {
  return *p ? nlohmann::ordered_json(**p) : nlohmann::ordered_json(nullptr);
}
nlohmann::ordered_json value_of(const ChoiceRef& choice) { return choice.get(); }
template <typename T>
nlohmann::ordered_json value_of(const T* p) {
  return *p;
}

}  // namespace

nlohmann::ordered_json config_to_json(const JobConfig& cfg) {
  JobConfig copy = cfg;  // describe() binds to mutable fields; we only read
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const auto& section : describe(copy)) {
    auto& obj = out[section.name] = nlohmann::ordered_json::object();
    for (const auto& field : section.fields) {
      std::visit([&](const auto& ref) { obj[field.key] = value_of(ref); }, field.ref);
    }
  }
  return out;
}

}  // namespace moe
