#include "src/core/cache_dir.h"

#include <cstdlib>

namespace moe {

std::string cache_dir() {
  if (const char* d = std::getenv("MOE_TRAIN_CACHE"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return std::string(d) + "/moe_train";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/moe_train";
  return ".moe_train_cache";
}

}  // namespace moe
