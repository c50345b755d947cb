// The op table's gradients on the CPU: every backward op against central
// finite differences of its forward (op_check::check_gradients).
#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <vector>

#include "src/kernels/op_check.h"
#include "src/kernels/op_table.h"
#include "src/kernels/ops.h"

namespace {

using moe::op_check::Result;
using moe::op_check::Shapes;

}  // namespace

TEST_CASE("every backward op of the table matches finite differences of its forward") {
  // Small; then odd sizes, three heads sharing one KV group, five experts.
  for (const Shapes& shapes : {moe::op_check::shapes_of(2, 4, 8, 2, 2, 4, 6, 9, 4, 2, 5),
                               moe::op_check::shapes_of(1, 7, 12, 3, 1, 6, 10, 11, 5, 2, 9)}) {
    const std::vector<Result> results = moe::op_check::check_gradients(shapes);
    // Each differentiable op is declared: the table cannot quietly shrink.
    std::set<std::string> ops;
    for (const Result& r : results) {
      ops.insert(r.op);
      INFO(shapes.text() << ": " << r.op << " " << r.shape << ": " << r.detail << " (worst " << r.worst << " of "
                         << r.tolerance << ")");
      CHECK(r.passed);
    }
    CHECK(ops == std::set<std::string>{"attention_backward", "cross_entropy_forward_backward", "embedding_backward",
                                       "grouped_matmul_backward", "matmul_backward", "moe_permute_backward",
                                       "moe_unpermute_backward", "multiply_noise", "multiply_noise_rows",
                                       "rmsnorm_backward", "rope_backward", "router_aux_losses", "router_backward",
                                       "router_noise_backward", "swiglu_backward"});
  }
}

TEST_CASE("a wrong gradient fails the finite-difference check, naming the input and element") {
  // The check is not vacuous: swiglu's declaration with db scaled by 1.1 fails on b.
  using moe::op_check::Side;
  const moe::op_check::Case wrong{"swiglu_backward", "[4, 3]", 0, [](Side& s) {
                                    const moe::op_check::Kind F32 = moe::op_check::Kind::kF32;
                                    const moe::Tensor a = s.randn({4, 3}, F32), b = s.randn({4, 3}, F32);
                                    const moe::Tensor out = s.zeros({4, 3}, F32), dout = s.randn({4, 3}, F32);
                                    const moe::Tensor da = s.zeros({4, 3}, F32), db = s.zeros({4, 3}, F32);
                                    s.gradient({{{"a", a, da}, {"b", b, db}},
                                                {{out, dout}},
                                                [=] { moe::ops::swiglu_forward(out, a, b); },
                                                [=] {
                                                  moe::ops::swiglu_backward(da, db, dout, a, b);
                                                  moe::ops::scale_inplace(db, 1.1f);
                                                }});
                                  }};
  const std::vector<Result> results = moe::op_check::check_gradient_cases({wrong});
  REQUIRE(results.size() == 1);
  CHECK_FALSE(results[0].passed);
  CHECK_THAT(results[0].detail, Catch::StartsWith("db[0] = ") && Catch::Contains("the finite difference gives"));
  CHECK(results[0].worst > 1);
}
