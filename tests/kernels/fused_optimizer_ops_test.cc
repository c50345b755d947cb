// The fused multi-tensor optimizer ops on host tensors (ops::sum_squares_many,
// ops::adamw_step_many) against the per-tensor ops they replace: bit for bit,
// since on the CPU they must not move the grad norm or the weights at all.
// Several tensors of odd sizes, empty ones among them (numel 0, with and
// without data), and the errors a caller's bug gets.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "src/core/bf16.h"
#include "src/core/tensor.h"
#include "src/kernels/ops.h"
#include "tests/kernels/grad_check.h"

namespace moe {
namespace {

using test::random_vector;
using Vec = std::vector<float>;

// Shapes of the list: odd sizes, a matrix, and three empty tensors.
const std::vector<std::vector<int64_t>> kShapes = {{37}, {0}, {1}, {5, 19}, {0, 8}, {1001}, {4099}, {3}, {0}};
constexpr size_t kNoData = 8;  // this empty tensor has no data at all (data == nullptr), as Tensor views may
constexpr float kSentinel = 12345.0f;

// Host tensors over vectors the list keeps: random values, then one sentinel
// element past each tensor's end that no op may touch (so an empty tensor still
// has data, except kNoData).
struct HostList {
  std::vector<Vec> data;
  std::vector<Tensor> tensors;

  HostList(uint64_t seed, float scale) {
    data.reserve(kShapes.size());  // the views below point into these vectors
    for (size_t i = 0; i < kShapes.size(); ++i) {
      data.push_back(random_vector(numel_of(kShapes[i]), seed + i, scale));
      data.back().push_back(kSentinel);
      tensors.push_back(view_of(i == kNoData ? nullptr : data.back().data(), kShapes[i]));
    }
  }
  HostList(const HostList&) = delete;  // the views would point into the original
};

Tensor host_view(Vec& v) { return view_of(v.data(), {static_cast<int64_t>(v.size())}); }

// Equal bit for bit (== would let -0 pass for +0).
bool same_bits(const Vec& a, const Vec& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

template <typename F>
std::string logic_error_of(F&& f) {
  try {
    f();
  } catch (const std::logic_error& e) {
    return e.what();
  }
  return "(no std::logic_error thrown)";
}

TEST_CASE("sum_squares_many on host tensors is the sequential sum of sum_squares, bit for bit") {
  HostList xs(11, 3.0f);
  // 1e8 next to small squares: another order of the double additions would show.
  xs.data[0][0] = 1e4f;
  double want = 0;
  for (const Tensor& x : xs.tensors) want += ops::sum_squares(x);
  CHECK(ops::sum_squares_many(xs.tensors) == want);
  // The order is visible: 2^52 + 0.5 + 0.5 rounds (to even) back to 2^52 twice;
  // any other grouping, e.g. 2^52 + (0.5 + 0.5), gives 2^52 + 1.
  Vec big = {67108864.0f}, half_a = {0.5f, 0.5f}, half_b = {0.5f, 0.5f};  // 2^26; squares sum to 0.5
  CHECK(ops::sum_squares_many({host_view(big), host_view(half_a), host_view(half_b)}) == 0x1p52);
  CHECK(ops::sum_squares_many({host_view(half_a), host_view(half_b), host_view(big)}) == 0x1p52 + 1);
  CHECK(ops::sum_squares_many({}) == 0.0);
  CHECK(ops::sum_squares_many({xs.tensors[1], xs.tensors[kNoData]}) == 0.0);  // empty tensors only
}

TEST_CASE("adamw_step_many on host tensors is adamw_step per tensor, bit for bit, over several steps") {
  const ops::AdamWShared shared{1e-3f, 0.9f, 0.95f, 1e-8f};
  const float decays[] = {0.1f, 0.0f};  // matrices decay, vectors do not
  // The state twice: stepped by the fused op, and one tensor at a time (the reference).
  HostList param(100, 1.0f), m(200, 0.1f), v(300, 0.1f);
  HostList param_ref(100, 1.0f), m_ref(200, 0.1f), v_ref(300, 0.1f);
  for (HostList* l : {&v, &v_ref}) {
    for (Vec& vi : l->data) {
      for (size_t j = 0; j + 1 < vi.size(); ++j) vi[j] *= vi[j];  // second moments are >= 0
    }
  }
  std::vector<ops::AdamWSlot> slots;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    slots.push_back({param.tensors[i], Tensor{}, m.tensors[i], v.tensors[i], decays[i % 2]});
  }
  for (int64_t step = 1; step <= 3; ++step) {
    INFO("step " << step);
    const float grad_scale = 0.5f * static_cast<float>(step);
    HostList grad(400 + 10 * static_cast<uint64_t>(step), 1.0f);
    grad.data[0][0] = 0.0f;
    for (size_t i = 0; i < slots.size(); ++i) slots[i].grad = grad.tensors[i];
    ops::adamw_step_many(slots, shared, step, grad_scale);
    for (size_t i = 0; i < slots.size(); ++i) {
      const ops::AdamW hyper{shared.lr, shared.beta1, shared.beta2, shared.eps, decays[i % 2]};
      ops::adamw_step(param_ref.tensors[i], grad.tensors[i], m_ref.tensors[i], v_ref.tensors[i], hyper, step,
                      grad_scale);
    }
    for (size_t i = 0; i < slots.size(); ++i) {
      INFO("tensor " << i << " " << param.tensors[i].shape_string());
      CHECK(same_bits(param.data[i], param_ref.data[i]));  // sentinels included
      CHECK(same_bits(m.data[i], m_ref.data[i]));
      CHECK(same_bits(v.data[i], v_ref.data[i]));
      CHECK(param.data[i].back() == kSentinel);
    }
  }
  // An empty list is a no-op.
  ops::adamw_step_many({}, shared, 4, 1.0f);
}

TEST_CASE("adamw_step_many writes each slot's bf16 compute copy from the updated weights") {
  const ops::AdamWShared shared{1e-2f, 0.9f, 0.95f, 1e-8f};
  Vec param = random_vector(777, 61), grad = random_vector(777, 62), m(777, 0.0f), v(777, 0.0f);
  std::vector<uint16_t> copy(777, 0xFFFF);
  ops::AdamWSlot slot{view_of(param.data(), {777}),
                      view_of(grad.data(), {777}),
                      view_of(m.data(), {777}),
                      view_of(v.data(), {777}),
                      0.1f,
                      view_of(copy.data(), {777}, DType::kBF16)};
  ops::adamw_step_many({slot}, shared, 1, 1.0f);
  int64_t wrong = 0;
  for (size_t i = 0; i < param.size(); ++i) wrong += copy[i] != f32_to_bf16(param[i]);
  CHECK(wrong == 0);
  // A copy of another size or dtype is a caller's bug.
  slot.compute = view_of(copy.data(), {776}, DType::kBF16);
  CHECK_THROWS_WITH(ops::adamw_step_many({slot}, shared, 2, 1.0f), Catch::Contains("adamw_step_many"));
  slot.compute = view_of(param.data(), {777});
  CHECK_THROWS_WITH(ops::adamw_step_many({slot}, shared, 2, 1.0f), Catch::Contains("compute"));
}

TEST_CASE("the fused optimizer ops refuse mismatched lists, naming the op and the tensor") {
  Vec a(12, 1.0f), b(12, 1.0f), c(12, 1.0f), d(11, 1.0f);
  const Tensor a_34 = view_of(a.data(), {3, 4}), b_34 = view_of(b.data(), {3, 4}), c_34 = view_of(c.data(), {3, 4});
  const Tensor d_11 = view_of(d.data(), {11});
  const Tensor a_bf16 = view_of(a.data(), {3, 4}, DType::kBF16);
  const Tensor b_on_device = view_of(b.data(), {3, 4}, DType::kF32, Device::kCuda);  // only its placement is read
  const ops::AdamWShared shared{1e-3f, 0.9f, 0.95f, 1e-8f};
  using Catch::Matchers::Contains;

  CHECK_THAT(logic_error_of([&] {
               ops::adamw_step_many({{a_34, b_34, c_34, d_11, 0.0f}}, shared, 1, 1.0f);
             }),
             Contains("adamw_step_many") && Contains("slot 0") && Contains("v [11]"));
  CHECK_THAT(
      logic_error_of([&] {
        ops::adamw_step_many({{a_34, b_34, c_34, c_34, 0.0f}, {a_bf16, b_34, c_34, c_34, 0.0f}}, shared, 1, 1.0f);
      }),
      Contains("adamw_step_many") && Contains("slot 1") && Contains("bf16"));
  CHECK_THAT(logic_error_of([&] {
               ops::adamw_step_many({{a_34, b_on_device, c_34, c_34, 0.0f}}, shared, 1, 1.0f);
             }),
             Contains("adamw_step_many") && Contains("host and device tensors mixed"));

  CHECK_THAT(logic_error_of([&] {
               ops::sum_squares_many({a_34, a_bf16});
             }),
             Contains("sum_squares_many") && Contains("tensor 1") && Contains("bf16"));
  CHECK_THAT(logic_error_of([&] {
               ops::sum_squares_many({a_34, Tensor{}});
             }),
             Contains("sum_squares_many") && Contains("tensor 1") && Contains("without data"));
  CHECK_THAT(logic_error_of([&] {
               ops::sum_squares_many({a_34, b_on_device});
             }),
             Contains("sum_squares_many") && Contains("host and device tensors mixed"));
  // Nothing was written by the refused calls.
  CHECK(a == Vec(12, 1.0f));
}

}  // namespace
}  // namespace moe
