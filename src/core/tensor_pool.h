// TensorPool: owns the memory behind Tensors. Layers allocate every buffer they
// will need when they are built (planned from the config), so nothing is
// allocated inside the step loop; the pool frees everything when it goes.
// Host pools use aligned host memory; device pools (Device::kCuda) take
// blocks from the caching allocator (device_allocator.h), and their zero-fill,
// zero() and copy_tensor() run on the backend's stream (cuda_stream.h).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "src/core/tensor.h"

namespace moe {

class TensorPool {
 public:
  // kAddressSpace (host only): tensors are address space, reserved but not
  // committed; they read as zeros and take memory only where written.
  // --dry-run builds the real model in such a pool to count what it
  // allocates, at any size.
  enum class Backing { kMemory, kAddressSpace };
  explicit TensorPool(Device device = Device::kCpu, Backing backing = Backing::kMemory);
  TensorPool(const TensorPool&) = delete;
  TensorPool& operator=(const TensorPool&) = delete;
  ~TensorPool();

  // A new zero-filled tensor.
  Tensor alloc(std::initializer_list<int64_t> shape, DType dtype = DType::kF32);
  Tensor alloc_shape(const std::vector<int64_t>& shape, DType dtype = DType::kF32);

  Device device() const { return device_; }
  // What the blocks take (with alignment and size-class rounding).
  int64_t bytes_allocated() const { return bytes_; }
  // What the tensors hold (the sum of their bytes()): what --dry-run plans.
  int64_t bytes_requested() const { return requested_; }

 private:
  Device device_;
  Backing backing_;
  std::vector<void*> blocks_;
  std::vector<size_t> reserved_;  // kAddressSpace: each block's length, for munmap
  int64_t bytes_ = 0;
  int64_t requested_ = 0;
};

// Sets every element of a tensor to zero.
void zero(const Tensor& t);
// dst = src (same dtype and numel).
void copy_tensor(const Tensor& dst, const Tensor& src);

// The crossings between host memory and a tensor on either device: a plain
// copy for host tensors. For device tensors each is a HOST SYNC (it waits
// for the backend's stream), so callers name it where they use it; the model
// crosses only at the edges of a step (token ids in; loss, expert counts and
// balance biases out).
// dst = src's t.bytes() bytes of host memory.
void upload(const Tensor& dst, const void* src);
// dst (t.bytes() bytes of host memory) = src.
void download(void* dst, const Tensor& src);

}  // namespace moe
