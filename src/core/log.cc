#include "src/core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <string>

namespace moe {

void init_logging(int rank, bool all_ranks_verbose) {
  // Logs go to stderr so that stdout stays clean for what a command prints
  // on purpose (--print-config JSON, the --dry-run table).
  const std::string name = "moe_train";
  spdlog::drop(name);  // a second call (tests run the CLI many times) replaces the logger
  auto logger = spdlog::stderr_color_mt(name);
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [rank " + std::to_string(rank) + "] [%^%l%$] %v");
  logger->set_level(rank == 0 || all_ranks_verbose ? spdlog::level::info : spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

}  // namespace moe
