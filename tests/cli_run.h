// The command line in-process for Catch2 tests: when a run fails, its stderr
// goes into the message of the next assertion, which says why.
#pragma once

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "tests/test_support.h"

namespace moe::test {

inline CliResult run_cli_reporting(const std::vector<std::string>& args) {
  CliResult r = run_cli_captured(args);
  if (r.code != 0) UNSCOPED_INFO(r.err);
  return r;
}

}  // namespace moe::test
