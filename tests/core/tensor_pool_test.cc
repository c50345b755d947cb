// TensorPool's address-space backing: what --dry-run builds the model in.
#include <catch2/catch.hpp>

#include "src/core/tensor_pool.h"

TEST_CASE("an address-space pool counts tensors far larger than memory, reading zeros, taking memory where written") {
  moe::TensorPool pool(moe::Device::kCpu, moe::TensorPool::Backing::kAddressSpace);
  // 64 GiB, more than the machines that run the tests have.
  const moe::Tensor big = pool.alloc({int64_t{16} << 30});
  const moe::Tensor small = pool.alloc({3, 5}, moe::DType::kBF16);
  CHECK(pool.bytes_requested() == (int64_t{64} << 30) + 30);
  CHECK(big.f32()[0] == 0.0f);
  CHECK(big.f32()[(int64_t{16} << 30) - 1] == 0.0f);
  big.f32()[12345] = 2.5f;  // one page is committed
  CHECK(big.f32()[12345] == 2.5f);
  CHECK(small.data != nullptr);
}

TEST_CASE("only a host pool can be address space alone") {
  CHECK_THROWS_WITH(moe::TensorPool(moe::Device::kCuda, moe::TensorPool::Backing::kAddressSpace),
                    Catch::Contains("only host pools"));
}
