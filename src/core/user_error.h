// UserError: bad input from the person running the job (config, data file,
// checkpoint, rank count). It carries one line that names the key or file, the
// value, the rule and the fix; main() prints it and exits with code 2.
// Bugs in our own code are not UserErrors.
#pragma once

#include <stdexcept>
#include <string>

namespace moe {

inline constexpr int kUserErrorExitCode = 2;

class UserError : public std::runtime_error {
 public:
  explicit UserError(const std::string& one_line) : std::runtime_error(one_line) {}
};

}  // namespace moe
