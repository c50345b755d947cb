#include "src/train/cpu_peak.h"

#include <cblas.h>
#include <dlfcn.h>
#include <fmt/format.h>
#include <sched.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "src/core/cache_dir.h"
#include "src/core/durable_file.h"

namespace moe {
namespace {

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

// What the figure depends on, one fact a line.
std::string identity() {
  cpu_set_t set;
  CPU_ZERO(&set);
  const int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
  // OpenBLAS names its build and threads; another CBLAS is one line less.
  using GetConfig = const char* (*)();
  using GetThreads = int (*)();
  const auto config = reinterpret_cast<GetConfig>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
  const auto threads = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  std::string id = "cpu " + cpu_model() + "\n" + fmt::format("cpus usable {}\n", cpus);
  if (config) id += fmt::format("blas {}\n", config());
  if (threads) id += fmt::format("blas threads {}\n", threads());
  return id;
}

}  // namespace

double measure_cpu_peak_flops() {
  const int n = 1024;
  std::vector<float> a(static_cast<size_t>(n) * n, 1.0f), b(a.size(), 0.5f), c(a.size(), 0.0f);
  double best = 0;
  for (int run = 0; run < 6; ++run) {
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (run > 0) best = std::max(best, 2.0 * n * n * n / sec);  // run 0 warms up threads and caches
  }
  return best;
}

std::string cpu_peak_cache_path() { return cache_file_for("cpu_peak", identity()); }

std::optional<double> cached_cpu_peak_flops() {
  std::ifstream in(cpu_peak_cache_path());
  std::string word;
  double flops = 0;
  if (in >> word >> flops && word == "flops" && flops > 0) return flops;
  return std::nullopt;
}

CpuPeak cpu_peak_flops() {
  const std::string path = cpu_peak_cache_path();
  if (const auto cached = cached_cpu_peak_flops()) return {*cached, "measured before, " + path};
  // Rounded as the file keeps it, so that this run and the next report alike.
  const double flops = std::stod(fmt::format("{:.6e}", measure_cpu_peak_flops()));
  try {
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    write_file_durably(path, fmt::format("flops {:.6e}\n", flops) + identity());
  } catch (const std::exception& e) {
    spdlog::warn("could not keep the CPU's measured peak in {} ({}): the next run measures again", path, e.what());
    return {flops, "measured now"};
  }
  return {flops, "measured now, kept in " + path};
}

}  // namespace moe
