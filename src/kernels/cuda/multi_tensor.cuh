// Chunked multi-tensor kernels: one launch over many tensors, as apex's
// multi_tensor_apply and PyTorch's _foreach kernels do. Used by the fused
// optimizer ops (sum_squares_many in elementwise.cu, adamw_step_many in
// adamw.cu), which would otherwise launch (and sync) once per parameter.
//
// The host lists the non-empty tensors in a ChunkTable: one Entry each, with
// its pointers, its numel n and first_chunk, the index of its first chunk of
// kChunk elements counted over the whole list. Block b of a launch takes the
// chunks b, b + gridDim.x, ..., finds each chunk's entry by a binary search
// over first_chunk and works on that chunk's element range. Which block sees
// which element depends only on the sizes in the list and the grid size, so a
// reduction over this partition is deterministic.
//
// An Entry is a plain struct with members `int64_t n`, `int64_t first_chunk`
// and an operator== (the table is uploaded only when it changes).
// Included by .cu files only (nvcc); not part of any C++ header.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "src/core/tensor.h"
#include "src/kernels/cuda/cuda_check.h"
#include "src/kernels/cuda/stream.h"

namespace moe::cuda::multi_tensor {

// Elements per chunk: 64 per thread of a 256-thread block. Small enough that a
// model of a few million parameters still gives the GPU hundreds of blocks,
// large enough that the per-chunk binary search is noise.
constexpr int64_t kChunk = int64_t{1} << 14;

// ---- device ----------------------------------------------------------------------

// The elements [begin, end) of one chunk, in the tensor of table[entry].
struct ChunkRange {
  int64_t entry, begin, end;
};

// Where chunk `chunk` (< the table's chunk total) lies: the last entry whose
// first_chunk <= chunk holds it (entries are non-empty, so first_chunk rises).
template <typename Entry>
__device__ __forceinline__ ChunkRange chunk_range(const Entry* table, int64_t count, int64_t chunk) {
  int64_t lo = 0, hi = count - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (table[mid].first_chunk <= chunk) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const int64_t begin = (chunk - table[lo].first_chunk) * kChunk;
  const int64_t end = begin + kChunk < table[lo].n ? begin + kChunk : table[lo].n;
  return {lo, begin, end};
}

// ---- host ------------------------------------------------------------------------

// Blocks for `chunks` chunks, at most max_blocks (each block then takes several).
inline unsigned blocks_for(int64_t chunks, int64_t max_blocks) {
  const int64_t blocks = chunks < max_blocks ? chunks : max_blocks;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

// Whether a list op can take t: F32 on the device, or shaped without elements
// (nothing is read); Tensor{} is no tensor.
inline bool f32_on_device(const Tensor& t) {
  return t.dtype == DType::kF32 &&
         ((t.ndim > 0 && t.numel() == 0) || (t.data != nullptr && t.device == Device::kCuda));
}

// "[3, 4] bf16 on the device", for messages about a list's tensors.
inline std::string placed(const Tensor& t) {
  const char* where = t.data == nullptr ? "without data" : t.device == Device::kCuda ? "on the device" : "on the host";
  return t.shape_string() + " " + dtype_name(t.dtype) + " " + where;
}

// After a launch over a list: throws naming the op and the list's size.
inline void check_list_launch(const char* op, int64_t tensors, int64_t chunks) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    check(status, std::string(op) + " (" + std::to_string(tensors) + " tensors, " + std::to_string(chunks) +
                      " chunks of " + std::to_string(kChunk) + ")");
  }
}

// The list of one op, built on the host each call and mirrored on the device.
// Keep one per op for the process (a function-local static): its buffers are
// grow-only and, like the stream, freed by the driver at exit. Single host
// thread, as the rest of the backend.
template <typename Entry>
class ChunkTable {
 public:
  // Starts a new list; the host vector keeps its capacity (no allocation once warm).
  void clear() {
    host_.clear();
    chunks_ = 0;
  }
  // Appends a tensor of e.n elements, numbering its chunks after the ones
  // before it. Empty tensors are skipped: they have no chunk to work on.
  void add(Entry e) {
    if (e.n <= 0) return;
    e.first_chunk = chunks_;
    chunks_ += (e.n + kChunk - 1) / kChunk;
    host_.push_back(e);
  }
  int64_t count() const { return static_cast<int64_t>(host_.size()); }
  int64_t chunks() const { return chunks_; }

  // The list (non-empty) in device memory, for kernels queued next on stream().
  // - Unchanged since the previous upload (the steady state of a training
  //   step): nothing is copied, allocated or waited for.
  // - Changed: one async copy on stream() from the pinned staging buffer. The
  //   device buffer is only overwritten after the kernels already queued on
  //   stream() (which may read the old list) have run. The staging buffer may
  //   still be read by the previous copy: the host waits for that copy alone
  //   (cudaEventSynchronize), which has long finished in practice.
  // - Longer than ever before: both buffers grow, after a
  //   cudaStreamSynchronize (queued kernels may still read the old buffer).
  const Entry* upload(const char* op) {
    if (host_ == uploaded_) return device_;
    uploaded_.clear();  // until the new copy is queued, the device holds neither list
    if (host_.size() > capacity_) {
      grow(host_.size(), op);
    } else {
      check(cudaEventSynchronize(copied_), std::string(op) + " (waiting for the previous table copy)");
    }
    const size_t bytes = host_.size() * sizeof(Entry);
    std::memcpy(staging_, host_.data(), bytes);
    check(cudaMemcpyAsync(device_, staging_, bytes, cudaMemcpyHostToDevice, stream()),
          std::string(op) + " (table upload, " + std::to_string(bytes) + " bytes)");
    check(cudaEventRecord(copied_, stream()), std::string(op) + " (table upload event)");
    uploaded_ = host_;
    return device_;
  }

 private:
  void grow(size_t count, const char* op) {
    const std::string what = std::string(op) + " (table of " + std::to_string(count) + " tensors)";
    // Doubling: a list that grows a tensor at a time regrows rarely.
    const size_t capacity = count > 2 * capacity_ ? count : 2 * capacity_;
    if (copied_ == nullptr) check(cudaEventCreateWithFlags(&copied_, cudaEventDisableTiming), what + ": event");
    if (device_ != nullptr) {
      check(cudaStreamSynchronize(stream()), what + ": waiting to free the smaller table");
      check(cudaFree(device_), what + ": freeing the smaller table");
      check(cudaFreeHost(staging_), what + ": freeing the smaller staging buffer");
      device_ = nullptr;
      staging_ = nullptr;
      capacity_ = 0;
    }
    check(cudaMalloc(&device_, capacity * sizeof(Entry)), what + ": device buffer");
    check(cudaMallocHost(&staging_, capacity * sizeof(Entry)), what + ": pinned staging buffer");
    capacity_ = capacity;
  }

  std::vector<Entry> host_;      // the list being built (clear, add)
  std::vector<Entry> uploaded_;  // what device_ holds (or will, once the queued copy has run)
  int64_t chunks_ = 0;
  Entry* device_ = nullptr;
  Entry* staging_ = nullptr;  // pinned: the source of the async copy
  size_t capacity_ = 0;       // entries of device_ and staging_
  cudaEvent_t copied_ = nullptr;
};

}  // namespace moe::cuda::multi_tensor
