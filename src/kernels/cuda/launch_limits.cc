#include "src/kernels/cuda/launch_limits.h"

#include <cxxabi.h>

#include <cstdlib>
#include <memory>
#include <sstream>
#include <stdexcept>

namespace moe::launch_limits {
namespace {

std::vector<KernelResources>& table() {
  static std::vector<KernelResources> rows;  // filled during static initialisation, read-only after
  return rows;
}

int64_t round_up(int64_t x, int64_t unit) { return (x + unit - 1) / unit * unit; }

std::string kib(int64_t bytes) {
  std::ostringstream s;
  s << bytes << " bytes (" << (bytes + 512) / 1024 << " KiB)";
  return s.str();
}

}  // namespace

const std::vector<GpuLimits>& checked_gpus() {
  static const std::vector<GpuLimits> gpus = [] {
    GpuLimits a100;
    a100.name = "A100";
    a100.arch = "sm_80";
    a100.shared_optin_bytes = 163 * 1024;
    GpuLimits h100;
    h100.name = "H100/H200";
    h100.arch = "sm_90";
    h100.shared_optin_bytes = 227 * 1024;
    return std::vector<GpuLimits>{a100, h100};
  }();
  return gpus;
}

int64_t registers_per_block(const KernelResources& k, const GpuLimits& gpu, int64_t threads) {
  const int64_t warps = (threads + 31) / 32;
  return warps * round_up(int64_t{k.registers} * 32, gpu.register_unit);
}

std::string launch_violation(const KernelResources& k, const GpuLimits& gpu, int64_t threads,
                             int64_t dynamic_shared_bytes) {
  const std::string who =
      "launch of " + k.kernel + " on " + gpu.name + " (" + k.arch + ") with " + std::to_string(threads) + " threads: ";
  if (threads < 1 || threads > gpu.max_threads) {
    return who + "a block holds 1 to " + std::to_string(gpu.max_threads) + " threads";
  }
  const int64_t regs = registers_per_block(k, gpu, threads);
  if (regs > gpu.registers_per_block) {
    const int64_t fit = gpu.registers_per_block / round_up(int64_t{k.registers} * 32, gpu.register_unit) * 32;
    return who + std::to_string(k.registers) + " registers per thread need " + std::to_string(regs) +
           " registers per block, over the " + std::to_string(gpu.registers_per_block) +
           " a block may have; launch at most " + std::to_string(fit) +
           " threads, or give the kernel __launch_bounds__(" + std::to_string(threads) + ")";
  }
  if (k.static_shared_bytes > gpu.static_shared_bytes) {
    return who + "static shared memory of " + kib(k.static_shared_bytes) + " is over the " +
           kib(gpu.static_shared_bytes) + " limit; use dynamic shared memory";
  }
  const int64_t shared = k.static_shared_bytes + dynamic_shared_bytes;
  if (shared > gpu.shared_optin_bytes) {
    return who + "shared memory of " + kib(shared) + " (static " + std::to_string(k.static_shared_bytes) +
           " + dynamic " + std::to_string(dynamic_shared_bytes) + ") is over the " + kib(gpu.shared_optin_bytes) +
           " a block may have; use smaller tiles";
  }
  return "";
}

std::string demangle(const std::string& mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> out(abi::__cxa_demangle(mangled.c_str(), nullptr, nullptr, &status),
                                             std::free);
  return status == 0 && out ? std::string(out.get()) : mangled;
}

std::vector<KernelResources> parse_table(const std::string& tsv) {
  std::vector<KernelResources> rows;
  std::istringstream in(tsv);
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    std::vector<std::string> fields;
    std::string field;
    std::istringstream cells(line);
    while (std::getline(cells, field, '\t')) fields.push_back(field);
    KernelResources k;
    try {
      if (fields.size() != 5) throw std::invalid_argument("5 tab-separated fields");
      size_t used = 0;
      k.arch = fields[0];
      k.source = fields[1];
      k.kernel = demangle(fields[2]);
      k.registers = std::stoi(fields[3], &used);
      if (used != fields[3].size() || k.registers < 0) throw std::invalid_argument("a register count");
      k.static_shared_bytes = std::stoll(fields[4], &used);
      if (used != fields[4].size() || k.static_shared_bytes < 0) throw std::invalid_argument("a byte count");
    } catch (const std::exception& e) {
      throw std::invalid_argument("launch-resource table, line " + std::to_string(number) + " (" + line +
                                  "): expected " + e.what());
    }
    rows.push_back(std::move(k));
  }
  return rows;
}

bool register_table(const char* tsv) {
  for (KernelResources& k : parse_table(tsv)) table().push_back(std::move(k));
  return true;
}

const std::vector<KernelResources>& registered() { return table(); }

const KernelResources* find(const std::string& arch, const std::string& kernel) {
  for (const KernelResources& k : table())
    if (k.arch == arch && k.kernel == kernel) return &k;
  return nullptr;
}

bool has_source(const std::string& source) {
  for (const KernelResources& k : table())
    if (k.source == source) return true;
  return false;
}

}  // namespace moe::launch_limits
