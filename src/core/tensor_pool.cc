#include "src/core/tensor_pool.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "src/core/device_allocator.h"

#if MOE_TRAIN_HAS_CUDA
#include "src/core/cuda_stream.h"
#endif

namespace moe {
namespace {

#if MOE_TRAIN_HAS_CUDA
void check_cuda(cudaError_t status, const std::string& what) {
  if (status != cudaSuccess) throw std::runtime_error("CUDA error in " + what + ": " + cudaGetErrorString(status));
}
#else
[[noreturn]] void no_cuda(const char* what) {
  throw std::logic_error(std::string(what) + ": device tensors, but this build has no CUDA backend");
}
#endif

}  // namespace

TensorPool::TensorPool(Device device, Backing backing) : device_(device), backing_(backing) {
  if (backing == Backing::kAddressSpace && device != Device::kCpu) {
    throw std::logic_error("TensorPool: only host pools can be address space alone");
  }
}

TensorPool::~TensorPool() {
  for (size_t i = 0; i < blocks_.size(); ++i) {
    void* p = blocks_[i];
    if (backing_ == Backing::kAddressSpace) {
      munmap(p, reserved_[i]);
    } else if (device_ == Device::kCpu) {
      std::free(p);
    } else {
      device_free(p);  // back to the cache; in-flight kernels on the stream finish first (stream order)
    }
  }
}

Tensor TensorPool::alloc_shape(const std::vector<int64_t>& shape, DType dtype) {
  if (shape.size() > Tensor::kMaxDims) throw std::logic_error("TensorPool::alloc: too many dims");
  Tensor t;
  t.ndim = static_cast<int>(shape.size());
  for (int i = 0; i < t.ndim; ++i) t.shape[i] = shape[i];
  t.dtype = dtype;
  t.device = device_;
  const size_t bytes = static_cast<size_t>(t.bytes());
  requested_ += t.bytes();
  if (device_ == Device::kCuda) {
#if MOE_TRAIN_HAS_CUDA
    void* p = device_alloc(static_cast<int64_t>(bytes));  // 512-byte aligned size classes
    blocks_.push_back(p);
    bytes_ += device_block_bytes(static_cast<int64_t>(bytes));
    check_cuda(cudaMemsetAsync(p, 0, bytes, cuda::stream()), "TensorPool zero-fill " + t.shape_string());
    t.data = p;
    return t;
#else
    no_cuda("TensorPool::alloc");
#endif
  }
  // 64-byte alignment for vector loads; at least one byte so empty tensors get a distinct pointer.
  const size_t padded = (bytes + 63) / 64 * 64 + 64;
  if (backing_ == Backing::kAddressSpace) {
    // Anonymous pages are zeros until written; NORESERVE commits no memory for them.
    void* p = mmap(nullptr, padded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    blocks_.push_back(p);
    reserved_.push_back(padded);
    bytes_ += static_cast<int64_t>(padded);
    t.data = p;
    return t;
  }
  void* p = std::aligned_alloc(64, padded);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, padded);
  blocks_.push_back(p);
  bytes_ += static_cast<int64_t>(padded);
  t.data = p;
  return t;
}

Tensor TensorPool::alloc(std::initializer_list<int64_t> shape, DType dtype) {
  return alloc_shape(std::vector<int64_t>(shape), dtype);
}

void zero(const Tensor& t) {
  if (t.device == Device::kCuda) {
#if MOE_TRAIN_HAS_CUDA
    check_cuda(cudaMemsetAsync(t.data, 0, static_cast<size_t>(t.bytes()), cuda::stream()), "zero " + t.shape_string());
    return;
#else
    no_cuda("zero");
#endif
  }
  std::memset(t.data, 0, static_cast<size_t>(t.bytes()));
}

void copy_tensor(const Tensor& dst, const Tensor& src) {
  if (dst.dtype != src.dtype || dst.numel() != src.numel()) {
    throw std::logic_error("copy_tensor: " + dst.shape_string() + " <- " + src.shape_string());
  }
  if (dst.device == Device::kCuda || src.device == Device::kCuda) {
#if MOE_TRAIN_HAS_CUDA
    // Ordered on the stream; a copy to the host is complete only after a sync of it.
    check_cuda(cudaMemcpyAsync(dst.data, src.data, static_cast<size_t>(src.bytes()), cudaMemcpyDefault, cuda::stream()),
               "copy_tensor " + dst.shape_string());
    return;
#else
    no_cuda("copy_tensor");
#endif
  }
  std::memcpy(dst.data, src.data, static_cast<size_t>(src.bytes()));
}

namespace {

// Between a host buffer and a tensor, synchronously: the host buffer may go
// away when this returns. `tensor` is the side that may live on the GPU.
void copy_with_host(void* dst, const void* src, const Tensor& tensor, bool to_tensor, const std::string& what) {
  if (tensor.device == Device::kCuda) {
#if MOE_TRAIN_HAS_CUDA
    const cudaMemcpyKind kind = to_tensor ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
    check_cuda(cudaMemcpyAsync(dst, src, static_cast<size_t>(tensor.bytes()), kind, cuda::stream()),
               what + " " + tensor.shape_string());
    check_cuda(cudaStreamSynchronize(cuda::stream()), what + " " + tensor.shape_string());
    return;
#else
    no_cuda(what.c_str());
#endif
  }
  if (tensor.bytes() > 0) std::memcpy(dst, src, static_cast<size_t>(tensor.bytes()));
}

}  // namespace

void upload(const Tensor& dst, const void* src) { copy_with_host(dst.data, src, dst, true, "upload"); }

void download(void* dst, const Tensor& src) { copy_with_host(dst, src.data, src, false, "download"); }

}  // namespace moe
