// GPU fp32 <-> bf16 casts against the host reference, bit for bit: the raw
// kernels, and ops::cast on device tensors (with upload/download).
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "src/core/bf16.h"
#include "src/core/cuda_device.h"
#include "src/core/tensor_pool.h"
#include "src/kernels/cuda/cast.h"
#include "src/kernels/cuda/cuda_check.h"
#include "src/kernels/ops.h"

TEST_CASE("f32_to_bf16 and bf16_to_f32 match the host bit for bit") {
  REQUIRE(moe::cuda_device_count() > 0);
  std::vector<float> in(100003);
  std::mt19937 gen(3);
  std::normal_distribution<float> dist(0.0f, 100.0f);
  for (auto& x : in) x = dist(gen);
  in[0] = std::numeric_limits<float>::infinity();
  in[1] = -0.0f;
  in[2] = 1.0f + 1.0f / 256;  // a tie
  in[3] = std::numeric_limits<float>::max();
  in[4] = std::numeric_limits<float>::denorm_min();

  const int64_t n = static_cast<int64_t>(in.size());
  float *d_in = nullptr, *d_back = nullptr;
  uint16_t* d_half = nullptr;
  moe::cuda::check(cudaMalloc(&d_in, n * sizeof(float)), "test alloc");
  moe::cuda::check(cudaMalloc(&d_back, n * sizeof(float)), "test alloc");
  moe::cuda::check(cudaMalloc(&d_half, n * sizeof(uint16_t)), "test alloc");
  moe::cuda::check(cudaMemcpy(d_in, in.data(), n * sizeof(float), cudaMemcpyHostToDevice), "test copy");
  // The kernels run on the backend's non-blocking stream: order them with the legacy-stream copies.
  moe::cuda::check(cudaDeviceSynchronize(), "test sync");
  moe::cuda::f32_to_bf16(d_half, d_in, n);
  moe::cuda::bf16_to_f32(d_back, d_half, n);
  moe::cuda::check(cudaDeviceSynchronize(), "test sync");
  std::vector<uint16_t> half(in.size());
  std::vector<float> back(in.size());
  moe::cuda::check(cudaMemcpy(half.data(), d_half, n * sizeof(uint16_t), cudaMemcpyDeviceToHost), "test copy");
  moe::cuda::check(cudaMemcpy(back.data(), d_back, n * sizeof(float), cudaMemcpyDeviceToHost), "test copy");
  cudaFree(d_in);
  cudaFree(d_back);
  cudaFree(d_half);

  for (int64_t i = 0; i < n; ++i) {
    INFO("element " << i << " = " << in[i]);
    REQUIRE(half[i] == moe::f32_to_bf16(in[i]));
    REQUIRE(back[i] == moe::bf16_to_f32(half[i]));
  }
}

TEST_CASE("ops::cast on device tensors equals the CPU's, and upload/download round-trip") {
  REQUIRE(moe::cuda_device_count() > 0);
  const int64_t n = 70001;
  std::vector<float> in(n);
  std::mt19937 gen(5);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  for (auto& x : in) x = dist(gen);

  moe::TensorPool host, device(moe::Device::kCuda);
  const moe::Tensor h_in = host.alloc({n}), h_half = host.alloc({n}, moe::DType::kBF16), h_back = host.alloc({n});
  const moe::Tensor d_in = device.alloc({n}), d_half = device.alloc({n}, moe::DType::kBF16), d_back = device.alloc({n});
  moe::upload(h_in, in.data());
  moe::upload(d_in, in.data());
  moe::ops::cast(h_half, h_in);
  moe::ops::cast(h_back, h_half);
  moe::ops::cast(d_half, d_in);
  moe::ops::cast(d_back, d_half);
  std::vector<uint16_t> got_half(n);
  std::vector<float> got_back(n), got_in(n);
  moe::download(got_half.data(), d_half);
  moe::download(got_back.data(), d_back);
  moe::download(got_in.data(), d_in);
  CHECK(std::memcmp(got_in.data(), in.data(), n * sizeof(float)) == 0);
  CHECK(std::memcmp(got_half.data(), h_half.data, n * sizeof(uint16_t)) == 0);
  CHECK(std::memcmp(got_back.data(), h_back.data, n * sizeof(float)) == 0);
}
