// A device buffer that an op keeps between calls (partial sums, a workspace),
// one per device. Layers size it when the model is built (the reserve_* ops
// in cuda_ops.h), so that the CUDA graphs of a step capture its final address.
// It may grow while no graph is alive; growing it while one is would leave
// that graph pointing at freed memory, so a larger request then is an error
// naming the op, never a silent reallocation.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <stdexcept>
#include <string>

#include "src/core/cuda_stream.h"
#include "src/core/stream_graph.h"
#include "src/kernels/cuda/cuda_check.h"

namespace moe::cuda {

class DeviceScratch {
 public:
  explicit DeviceScratch(const char* name) : name_(name) {}

  // At least `bytes` bytes on the current device; `op` names the caller in errors.
  void* get(size_t bytes, const std::string& op) {
    int device = 0;
    check(cudaGetDevice(&device), op);
    Buffer& b = buffers_[device];
    if (bytes <= b.bytes) return b.data;
    if (StreamGraph::alive() > 0) {
      throw std::logic_error(op + ": its " + name_ + " needs " + std::to_string(bytes) + " bytes, but holds " +
                             std::to_string(b.bytes) +
                             ", sized when the model was built, and a CUDA graph that "
                             "may hold its address is alive: the model must reserve its largest shapes when it "
                             "is built");
    }
    if (b.data != nullptr) {
      check(cudaStreamSynchronize(stream()), op + " (growing the " + name_ + ")");  // work may still read it
      check(cudaFree(b.data), op + " (freeing the " + name_ + ")");
      b = Buffer{};
    }
    check(cudaMalloc(&b.data, bytes), op + " (" + name_ + " of " + std::to_string(bytes) + " bytes)");
    b.bytes = bytes;
    return b.data;
  }

 private:
  struct Buffer {
    void* data = nullptr;
    size_t bytes = 0;
  };
  const char* name_;
  std::map<int, Buffer> buffers_;  // by device; process lifetime (the driver frees them at exit)
};

}  // namespace moe::cuda
