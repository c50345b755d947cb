#include "src/train/human_units.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace moe {

std::string human_count(double n) {
  if (n >= 1e9) return fmt::format("{:.2f}B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.1f}k", n / 1e3);
  return fmt::format("{:.0f}", n);
}

std::string human_bytes(int64_t bytes) {
  const auto x = static_cast<double>(bytes);
  if (x >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", x / (1024.0 * 1024 * 1024));
  return fmt::format("{:.0f} MiB", x / (1024.0 * 1024));
}

std::string human_seconds(double sec) {
  const auto s = static_cast<int64_t>(std::llround(std::max(0.0, sec)));
  if (s >= 3600) return fmt::format("{}h{:02}m{:02}s", s / 3600, (s / 60) % 60, s % 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{:.1f}s", sec);
}

std::string human_duration(double sec) {
  const auto s = static_cast<int64_t>(std::llround(std::max(0.0, sec)));
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

}  // namespace moe
