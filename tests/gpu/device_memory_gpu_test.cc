// Device memory: the caching allocator reuses freed blocks without another
// cudaMalloc and tracks peak bytes; device TensorPools zero-fill, zero() and
// copy_tensor() (host <-> device, device <-> device) on the backend's stream.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <vector>

#include "src/core/cuda_device.h"
#include "src/core/cuda_stream.h"
#include "src/core/device_allocator.h"
#include "src/core/tensor_pool.h"

TEST_CASE("a freed block serves the next request of its size class") {
  REQUIRE(moe::cuda_device_count() > 0);
  const moe::DeviceMemoryStats before = moe::device_memory_stats();
  void* a = moe::device_alloc(1000);
  const moe::DeviceMemoryStats during = moe::device_memory_stats();
  CHECK(during.in_use == before.in_use + 1024);
  CHECK(during.peak_in_use >= during.in_use);
  moe::device_free(a);
  void* b = moe::device_alloc(900);  // same class (1024 B)
  CHECK(b == a);
  CHECK(moe::device_memory_stats().cuda_mallocs == during.cuda_mallocs);
  moe::device_free(b);
  CHECK(moe::device_memory_stats().in_use == before.in_use);
}

TEST_CASE("device pools: zero-filled, zero(), and copies both ways") {
  REQUIRE(moe::cuda_device_count() > 0);
  moe::TensorPool host, dev(moe::Device::kCuda);
  const moe::Tensor h = host.alloc({3, 5});
  const moe::Tensor d1 = dev.alloc({3, 5}), d2 = dev.alloc({3, 5});
  CHECK(d1.device == moe::Device::kCuda);
  for (int64_t i = 0; i < h.numel(); ++i) h.f32()[i] = static_cast<float>(i) + 0.5f;
  moe::copy_tensor(h, d1);  // zero-filled at allocation
  REQUIRE(cudaStreamSynchronize(moe::cuda::stream()) == cudaSuccess);
  for (int64_t i = 0; i < h.numel(); ++i) CHECK(h.f32()[i] == 0.0f);
  for (int64_t i = 0; i < h.numel(); ++i) h.f32()[i] = static_cast<float>(i) + 0.5f;
  moe::copy_tensor(d1, h);
  moe::copy_tensor(d2, d1);
  moe::zero(d1);
  const moe::Tensor back = host.alloc({3, 5}), zeros = host.alloc({3, 5});
  moe::copy_tensor(back, d2);
  moe::copy_tensor(zeros, d1);
  REQUIRE(cudaStreamSynchronize(moe::cuda::stream()) == cudaSuccess);
  for (int64_t i = 0; i < h.numel(); ++i) {
    CHECK(back.f32()[i] == static_cast<float>(i) + 0.5f);
    CHECK(zeros.f32()[i] == 0.0f);
  }
}
