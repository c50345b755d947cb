// The caching allocator's size classes (pure arithmetic, checked on CPU).
#include <catch2/catch.hpp>

#include "src/core/device_allocator.h"

TEST_CASE("size classes: 512-byte steps up to 1 MiB, then 2 MiB steps") {
  CHECK(moe::device_block_bytes(0) == 512);
  CHECK(moe::device_block_bytes(1) == 512);
  CHECK(moe::device_block_bytes(512) == 512);
  CHECK(moe::device_block_bytes(513) == 1024);
  CHECK(moe::device_block_bytes(1 << 20) == (1 << 20));
  CHECK(moe::device_block_bytes((1 << 20) + 1) == (2 << 20));
  CHECK(moe::device_block_bytes(int64_t{5} << 20) == (int64_t{6} << 20));
  for (int64_t n : {int64_t{7}, int64_t{4097}, int64_t{3} << 20, int64_t{1} << 33}) {
    CHECK(moe::device_block_bytes(n) >= n);
    CHECK(moe::device_block_bytes(moe::device_block_bytes(n)) == moe::device_block_bytes(n));
  }
}
