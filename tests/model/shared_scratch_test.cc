// SharedScratch: one buffer per role for every layer, and a role has one shape.
#include "src/model/shared_scratch.h"

#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>

using Catch::Matchers::Contains;
using moe::DType;
using moe::ScratchRole;

TEST_CASE("a role is one buffer; asking for it with another shape or dtype is a logic_error naming the role") {
  moe::TensorPool pool;
  moe::SharedScratch scratch(pool);
  const moe::Tensor dq = scratch.get(ScratchRole::kAttentionDq, {2, 3}, DType::kF32);
  CHECK(scratch.get(ScratchRole::kAttentionDq, {2, 3}, DType::kF32).data == dq.data);
  CHECK(scratch.get(ScratchRole::kAttentionDk, {2, 3}, DType::kF32).data != dq.data);
  CHECK_THROWS_AS(scratch.get(ScratchRole::kAttentionDq, {3, 2}, DType::kF32), std::logic_error);
  CHECK_THROWS_WITH(scratch.get(ScratchRole::kAttentionDq, {2, 3}, DType::kBF16), Contains("role attention.dq"));
  CHECK(std::string(moe::scratch_role_name(ScratchRole::kMoeDlogitsAct)) == "moe.dlogits_act");
}
