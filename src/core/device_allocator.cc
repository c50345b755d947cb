#include "src/core/device_allocator.h"

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#if MOE_TRAIN_HAS_CUDA
#include <cuda_runtime.h>
#endif

namespace moe {

int64_t device_block_bytes(int64_t request) {
  constexpr int64_t kSmall = 512, kLarge = int64_t{2} << 20, kSmallLimit = int64_t{1} << 20;
  const int64_t n = request < 1 ? 1 : request;
  if (n <= kSmallLimit) return (n + kSmall - 1) / kSmall * kSmall;
  return (n + kLarge - 1) / kLarge * kLarge;
}

#if MOE_TRAIN_HAS_CUDA
namespace {

struct Cache {
  std::mutex mu;
  std::map<int64_t, std::vector<void*>> free_blocks;  // by size class
  std::unordered_map<void*, int64_t> live;            // block -> size class
  DeviceMemoryStats stats;
};

Cache& cache() {
  static Cache* c = new Cache;  // never destroyed: blocks outlive static destructors of callers
  return *c;
}

std::string describe(const DeviceMemoryStats& s) {
  return "in use " + std::to_string(s.in_use) + " B, reserved " + std::to_string(s.reserved) + " B, peak " +
         std::to_string(s.peak_in_use) + " B";
}

}  // namespace

void* device_alloc(int64_t bytes) {
  Cache& c = cache();
  const int64_t size = device_block_bytes(bytes);
  std::lock_guard<std::mutex> lock(c.mu);
  void* p = nullptr;
  auto it = c.free_blocks.find(size);
  if (it != c.free_blocks.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
  } else {
    cudaError_t status = cudaMalloc(&p, static_cast<size_t>(size));
    if (status == cudaErrorMemoryAllocation) {
      // Give the cached blocks back and try once more before failing.
      cudaGetLastError();
      for (auto& [cls, blocks] : c.free_blocks) {
        for (void* b : blocks) {
          cudaFree(b);
          c.stats.reserved -= cls;
        }
        blocks.clear();
      }
      status = cudaMalloc(&p, static_cast<size_t>(size));
    }
    if (status != cudaSuccess) {
      cudaGetLastError();
      throw std::runtime_error("device memory: cudaMalloc of " + std::to_string(size) + " B failed (" +
                               cudaGetErrorString(status) + "); " + describe(c.stats) +
                               "; lower train.batch_size or spread the model over more ranks (--dry-run estimates it)");
    }
    c.stats.reserved += size;
    c.stats.cuda_mallocs += 1;
  }
  c.live[p] = size;
  c.stats.in_use += size;
  if (c.stats.in_use > c.stats.peak_in_use) c.stats.peak_in_use = c.stats.in_use;
  return p;
}

void device_free(void* p) {
  if (p == nullptr) return;
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  const auto it = c.live.find(p);
  if (it == c.live.end()) throw std::logic_error("device_free: not a block of the caching allocator");
  c.stats.in_use -= it->second;
  c.free_blocks[it->second].push_back(p);
  c.live.erase(it);
}

DeviceMemoryStats device_memory_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.stats;
}
void reset_device_memory_peak() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.peak_in_use = c.stats.in_use;
}
#else
void reset_device_memory_peak() {}
void* device_alloc(int64_t) { throw std::logic_error("device memory: this build has no CUDA backend"); }
void device_free(void* p) {
  if (p != nullptr) throw std::logic_error("device memory: this build has no CUDA backend");
}
DeviceMemoryStats device_memory_stats() { return {}; }
#endif

}  // namespace moe
