// A fresh, empty scratch folder for a test: under Bazel's TEST_TMPDIR (or
// the system temp folder), unique per call and per process, so that ranks
// and repeated calls never share one by accident.
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace moe::test {

inline std::string fresh_dir(const std::string& name) {
  static std::atomic<int> counter{0};
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::filesystem::path base =
      tmp != nullptr ? std::filesystem::path(tmp) : std::filesystem::temp_directory_path() / "moe_train_tests";
  const std::filesystem::path dir = base / (name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace moe::test
