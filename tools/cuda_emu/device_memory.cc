#include "tools/cuda_emu/device_memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <mutex>

namespace emu {
namespace {

constexpr size_t kAlign = 256;  // cudaMalloc's guarantee

struct Arena {
  unsigned char* base = nullptr;
  std::map<size_t, size_t> live;       // offset -> bytes reserved (rounded up)
  std::map<size_t, size_t> requested;  // offset -> bytes asked for: what copies may touch
  std::map<size_t, size_t> free;       // offset -> bytes, coalesced
  size_t high_water = 0;               // end of the furthest allocation ever made: what access must open
  int access_depth = 0;
  std::mutex mutex;

  Arena() {
    void* p = mmap(nullptr, kDeviceBytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      std::fprintf(stderr, "cuda_emu: cannot reserve %zu bytes of address space for device memory\n", kDeviceBytes);
      std::abort();
    }
    base = static_cast<unsigned char*>(p);
    free[0] = kDeviceBytes;
  }

  void protect(bool open) {
    if (high_water == 0) return;
    if (mprotect(base, high_water, open ? PROT_READ | PROT_WRITE : PROT_NONE) != 0) {
      std::fprintf(stderr, "cuda_emu: mprotect of device memory failed\n");
      std::abort();
    }
  }
};

Arena& arena() {
  static Arena* a = new Arena;  // never destroyed: static destructors may still free device memory
  return *a;
}

}  // namespace

void* device_alloc(size_t bytes) {
  Arena& a = arena();
  std::lock_guard<std::mutex> lock(a.mutex);
  const size_t size = ((bytes > 0 ? bytes : 1) + kAlign - 1) / kAlign * kAlign;
  for (auto it = a.free.begin(); it != a.free.end(); ++it) {
    if (it->second < size) continue;
    const size_t offset = it->first, left = it->second - size;
    a.free.erase(it);
    if (left > 0) a.free[offset + size] = left;
    a.live[offset] = size;
    a.requested[offset] = bytes;
    if (offset + size > a.high_water) {
      a.high_water = offset + size;
      if (a.access_depth > 0) a.protect(true);
    }
    return a.base + offset;
  }
  return nullptr;
}

bool device_free(void* p) {
  Arena& a = arena();
  std::lock_guard<std::mutex> lock(a.mutex);
  const auto offset = static_cast<size_t>(static_cast<unsigned char*>(p) - a.base);
  auto it = a.live.find(offset);
  if (!is_device_address(p) || it == a.live.end()) return false;
  size_t start = offset, size = it->second;
  a.live.erase(it);
  a.requested.erase(offset);
  auto next = a.free.lower_bound(start);
  if (next != a.free.end() && next->first == start + size) {
    size += next->second;
    next = a.free.erase(next);
  }
  if (next != a.free.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      size += prev->second;
      a.free.erase(prev);
    }
  }
  a.free[start] = size;
  return true;
}

bool is_device_address(const void* p) {
  const auto* c = static_cast<const unsigned char*>(p);
  return c >= arena().base && c < arena().base + kDeviceBytes;
}

bool is_device_range(const void* p, size_t bytes) {
  Arena& a = arena();
  if (!is_device_address(p)) return false;
  const auto offset = static_cast<size_t>(static_cast<const unsigned char*>(p) - a.base);
  std::lock_guard<std::mutex> lock(a.mutex);
  auto it = a.requested.upper_bound(offset);
  if (it == a.requested.begin()) return false;
  --it;
  return offset + bytes <= it->first + std::max<size_t>(it->second, 1);
}

std::string describe_address(const void* p, size_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%p", p);
  std::string s = std::string(buf) + " + " + std::to_string(bytes) + " bytes";
  if (!is_device_address(p)) return s + " (host memory)";
  return s + (is_device_range(p, bytes) ? " (device memory)" : " (device address outside any live allocation)");
}

DeviceAccess::DeviceAccess() {
  Arena& a = arena();
  std::lock_guard<std::mutex> lock(a.mutex);
  if (a.access_depth++ == 0) a.protect(true);
}

DeviceAccess::~DeviceAccess() {
  Arena& a = arena();
  std::lock_guard<std::mutex> lock(a.mutex);
  if (--a.access_depth == 0) a.protect(false);
}

}  // namespace emu
