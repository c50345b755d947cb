// moe_train: the one binary. Everything lives in run_cli (src/cli.cc) so
// that tests can run the command line in-process; run_main adds what only a
// process of a multi-rank job needs.
#include <iostream>
#include <string>
#include <vector>

#include "src/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return moe::run_main(args, std::cout, std::cerr);
}
