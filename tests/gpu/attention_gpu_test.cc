// What GPU attention refuses, naming the op and the shapes: head dims over
// 128, mixed dtypes, an lse of the wrong size. Its values against the CPU, in
// every dtype and over head dims, lengths and KV groups, are the op table's
// (tests/gpu:op_table_gpu_test).
#include <catch2/catch.hpp>

#include "src/core/cuda_device.h"
#include "src/core/tensor.h"
#include "src/kernels/ops.h"
#include "tests/gpu/gpu_test_util.h"

namespace {

using moe::DType;
using moe::test::DeviceTensor;

void require_gpu() { REQUIRE(moe::cuda_device_count() > 0); }

}  // namespace

TEST_CASE("GPU attention refuses what it does not support, naming the op and the shapes") {
  require_gpu();
  using Catch::Matchers::Contains;
  using moe::test::device_tensor;
  {
    // Head dim over 128.
    const DeviceTensor q = device_tensor({1, 8, 2, 160}, DType::kBF16), k = device_tensor({1, 8, 2, 160}, DType::kBF16),
                       v = device_tensor({1, 8, 2, 160}, DType::kBF16),
                       out = device_tensor({1, 8, 2, 160}, DType::kBF16), lse = device_tensor({1, 2, 8}, DType::kF32);
    REQUIRE_THROWS_WITH(moe::ops::attention_forward(out.t, lse.t, q.t, k.t, v.t),
                        Contains("attention_forward") && Contains("head dim 160") && Contains("[1, 8, 2, 160]"));
    REQUIRE_THROWS_WITH(moe::ops::attention_backward(q.t, k.t, v.t, out.t, q.t, k.t, v.t, out.t, lse.t),
                        Contains("attention_backward") && Contains("head dim 160"));
  }
  {
    // Mixed dtypes: k F32 with q BF16.
    const DeviceTensor q = device_tensor({1, 8, 2, 64}, DType::kBF16), k = device_tensor({1, 8, 2, 64}, DType::kF32),
                       v = device_tensor({1, 8, 2, 64}, DType::kBF16), out = device_tensor({1, 8, 2, 64}, DType::kBF16),
                       lse = device_tensor({1, 2, 8}, DType::kF32);
    REQUIRE_THROWS_WITH(moe::ops::attention_forward(out.t, lse.t, q.t, k.t, v.t),
                        Contains("attention_forward") && Contains("[1, 8, 2, 64]"));
  }
  {
    // lse of the wrong size.
    const DeviceTensor q = device_tensor({1, 8, 2, 64}, DType::kF32), k = device_tensor({1, 8, 1, 64}, DType::kF32),
                       v = device_tensor({1, 8, 1, 64}, DType::kF32), out = device_tensor({1, 8, 2, 64}, DType::kF32),
                       lse = device_tensor({1, 1, 8}, DType::kF32);
    REQUIRE_THROWS_WITH(moe::ops::attention_forward(out.t, lse.t, q.t, k.t, v.t),
                        Contains("attention_forward") && Contains("lse"));
  }
}
