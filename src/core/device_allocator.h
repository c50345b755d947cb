// Device memory through one caching allocator: blocks are requested from
// cudaMalloc once and kept; a freed block goes back to a free list of its
// size class and serves the next request of that class, so a training step —
// whose buffers are all planned at start-up anyway — never reaches cudaMalloc.
// Plain device allocations only (never managed memory). The statistics give
// the peak bytes that metrics report.
#pragma once

#include <cstdint>

namespace moe {

struct DeviceMemoryStats {
  int64_t in_use = 0;        // bytes of live blocks
  int64_t peak_in_use = 0;   // the most ever live at once
  int64_t reserved = 0;      // bytes held from cudaMalloc (live + cached)
  int64_t cuda_mallocs = 0;  // how many times cudaMalloc was called
};

// The size class a request is served from: multiples of 512 bytes up to
// 1 MiB, then multiples of 2 MiB (large blocks are few; rounding them finely
// would fragment the cache).
int64_t device_block_bytes(int64_t request);

// Only with a CUDA build (a logic_error otherwise). Out of memory is a
// runtime_error naming the request and the allocator's state.
void* device_alloc(int64_t bytes);
void device_free(void* p);
DeviceMemoryStats device_memory_stats();
// Starts the peak over from what is in use now (after work that is not part
// of what a run reports, such as the GPU check before training).
void reset_device_memory_peak();

}  // namespace moe
