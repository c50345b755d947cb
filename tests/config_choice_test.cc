// The config's enums: a Choice<E> reads as its enum and as its names, the
// names are listed once (enums.h) and the schema offers exactly those; a name
// written in code that is not one of them is a programming error.
#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "src/config/enums.h"
#include "src/config/schema.h"

using moe::Choice;
using moe::Precision;

TEST_CASE("a choice compares with its enum and its names, and takes a name") {
  Choice<Precision> p = Precision::kBf16;
  CHECK(p == Precision::kBf16);
  CHECK(p == "bf16");
  CHECK(p != "fp32");
  CHECK(std::string(p.name()) == "bf16");
  p = "fp32";
  CHECK(p == Precision::kFp32);
  CHECK(moe::quoted(p) == "\"fp32\"");
  CHECK(Choice<Precision>::names() == std::vector<std::string>{"fp32", "bf16", "fp8"});
  CHECK(Choice<Precision>::names_text() == "fp32 | bf16 | fp8");
}

TEST_CASE("a name in code that is not one of the choice's throws std::logic_error") {
  Choice<Precision> p = Precision::kBf16;
  CHECK_THROWS_AS(p = "fp16", std::logic_error);
  CHECK_THROWS_AS(p == "fp16", std::logic_error);
  CHECK(p == Precision::kBf16);
  CHECK_FALSE(Choice<Precision>::find("fp16").has_value());
}

TEST_CASE("every enumerated key of the schema takes each of its names and reads it back") {
  moe::JobConfig cfg;
  int choices = 0;
  for (auto& section : moe::describe(cfg)) {
    for (auto& field : section.fields) {
      const auto* choice = std::get_if<moe::ChoiceRef>(&field.ref);
      if (!choice) continue;
      ++choices;
      REQUIRE_FALSE(choice->names.empty());
      for (const auto& name : choice->names) {
        choice->set(name);
        CHECK(choice->get() == name);
      }
    }
  }
  CHECK(choices == 13);                                     // the twelve enums' keys and model.moe_router
  CHECK(cfg.scheduler.name == moe::LrSchedule::kConstant);  // the last name listed
}
