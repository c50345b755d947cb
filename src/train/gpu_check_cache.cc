#include "src/train/gpu_check_cache.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <fstream>

#include "src/core/build_info.h"
#include "src/core/cache_dir.h"
#include "src/core/cuda_device.h"
#include "src/core/durable_file.h"

namespace moe {
namespace {

// The kernel driver's version line ("NVRM version: NVIDIA UNIX x86_64 Kernel
// Module  580.65.06 ..."), or empty where there is none (the CUDA emulator).
std::string driver_line() {
  std::ifstream in("/proc/driver/nvidia/version");
  std::string line;
  std::getline(in, line);
  return line;
}

// What identifies a check's conditions, one fact a line.
std::string identity(int device) {
  std::string id;
  for (const auto& [key, value] : build_facts()) id += key + " " + value + "\n";
  struct stat st {};
  if (stat("/proc/self/exe", &st) == 0) {
    id += fmt::format("binary {} bytes, modified {}\n", static_cast<int64_t>(st.st_size),
                      static_cast<int64_t>(st.st_mtime));
  }
  id += "gpu " + cuda_device_description(device) + "\n";
  id += "driver " + driver_line() + "\n";
  return id;
}

// A line of the file per vendor kernel the check replaced: "fallback attention: <what failed>".
constexpr const char* kFallback = "fallback ";

}  // namespace

std::string gpu_check_cache_path(int device) { return cache_file_for("gpu_check", identity(device)); }

bool gpu_check_passed_before(int device) { return std::filesystem::exists(gpu_check_cache_path(device)); }

std::map<std::string, std::string> remembered_fallbacks(int device) {
  std::map<std::string, std::string> fallbacks;
  std::ifstream in(gpu_check_cache_path(device));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(kFallback, 0) != 0) continue;
    const std::string rest = line.substr(std::string(kFallback).size());
    const size_t colon = rest.find(": ");
    fallbacks[rest.substr(0, colon)] = colon == std::string::npos ? "" : rest.substr(colon + 2);
  }
  return fallbacks;
}

void remember_gpu_check(const GpuCheckReport& report) {
  if (!report.passed()) return;
  const std::string path = gpu_check_cache_path(report.device);
  try {
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    std::string text = identity(report.device) + gpu_check_summary(report) + "\n";
    for (const auto& [family, why] : report.fallbacks) text += kFallback + family + ": " + why + "\n";
    write_file_durably(path, text);
  } catch (const std::exception& e) {
    spdlog::warn("could not remember the passed GPU check in {} ({}): the next run checks again", path, e.what());
  }
}

}  // namespace moe
