#include "src/config/to_json.h"

#include "src/config/schema.h"

namespace moe {

nlohmann::ordered_json config_to_json(const JobConfig& cfg) {
  JobConfig copy = cfg;  // describe() binds to mutable fields; we only read
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const auto& section : describe(copy)) {
    auto& obj = out[section.name] = nlohmann::ordered_json::object();
    for (const auto& field : section.fields) {
      std::visit(
          [&](auto* p) {
            using T = std::decay_t<decltype(*p)>;
            if constexpr (std::is_same_v<T, std::optional<int64_t>>) {
              obj[field.key] = *p ? nlohmann::ordered_json(**p) : nlohmann::ordered_json(nullptr);
            } else {
              obj[field.key] = *p;
            }
          },
          field.ref);
    }
  }
  return out;
}

}  // namespace moe
