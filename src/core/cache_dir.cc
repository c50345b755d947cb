#include "src/core/cache_dir.h"

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace moe {

std::string cache_dir() {
  if (const char* d = std::getenv("MOE_TRAIN_CACHE"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return std::string(d) + "/moe_train";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/moe_train";
  return ".moe_train_cache";
}

std::string cache_file_for(const std::string& folder, const std::string& identity) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : identity) h = (h ^ c) * 1099511628211ULL;
  char name[32];
  std::snprintf(name, sizeof name, "%016" PRIx64 ".txt", h);
  return cache_dir() + "/" + folder + "/" + name;
}

}  // namespace moe
