#include <spdlog/spdlog.h>

#include <cstdlib>

#include "src/commands.h"
#include "src/core/user_error.h"
#include "src/data/prepare.h"

namespace moe {

int run_prepare(const std::vector<std::string>& args) {
  std::string output;
  double val_fraction = 0.01;
  std::vector<std::string> inputs;
  for (const std::string& a : args) {
    if (a.rfind("--output=", 0) == 0) {
      output = a.substr(9);
    } else if (a.rfind("--val-fraction=", 0) == 0) {
      char* end = nullptr;
      val_fraction = std::strtod(a.c_str() + 15, &end);
      if (*end != '\0' || !(val_fraction >= 0 && val_fraction < 1)) {
        throw UserError(a + ": must be a number in [0, 1), e.g. --val-fraction=0.01");
      }
    } else if (a.rfind("-", 0) == 0) {
      throw UserError("prepare: unknown option " + a + "; usage: moe_train prepare --output=DIR TEXT_FILE...");
    } else {
      inputs.push_back(a);
    }
  }
  if (output.empty() || inputs.empty()) {
    throw UserError(
        "prepare: needs --output=DIR and at least one text file; e.g. moe_train prepare "
        "--output=data/mytext notes/*.txt");
  }
  prepare_text_dataset(inputs, output, val_fraction);
  spdlog::info("prepared {} file(s) into {}/train and {}/val (byte-level, vocab {})", inputs.size(), output, output,
               kByteVocabSize);
  return 0;
}

}  // namespace moe
