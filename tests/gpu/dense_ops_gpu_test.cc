// What the dense CUDA ops promise beyond the op table (op_table_gpu_test
// holds every op against the CPU in every dtype mix and at the sizes each
// kernel's paths need): multi-tensor lists of more tensors and chunks than
// one launch has blocks, an op's scratch that must not move under a CUDA
// graph, and the refusals of unsupported dtypes.
//
// The fused multi-tensor ops are held against the same ops on host tensors
// (which are the per-tensor CPU ops, bit for bit:
// tests/kernels/fused_optimizer_ops_test): sum_squares_many as sum_squares
// (rtol 1e-9: double accumulation in another order), adamw_step_many as
// adamw_step (rtol 1e-6, atol 1e-10), and both bitwise equal from run to run.
// The lists hold more tensors (and chunks of 16384 elements,
// multi_tensor.cuh's kChunk) than one launch has blocks, odd and empty
// tensors, tensors of several chunks, and change between calls (the device
// table is re-uploaded, and grows).
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "src/core/bf16.h"
#include "src/core/cuda_device.h"
#include "src/core/stream_graph.h"
#include "src/core/tensor.h"
#include "src/kernels/cpu/cpu_ops.h"
#include "src/kernels/cuda/cuda_check.h"
#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/ops.h"
#include "tests/gpu/gpu_test_util.h"

namespace moe {
namespace {

using test::check_close;
using test::device_tensor;
using test::DeviceTensor;
using test::download;
using test::random_vector;
using test::upload;
using Vec = std::vector<float>;

struct Tol {
  double rtol, atol;
};

void expect_close(const Tensor& got, const Vec& want, Tol tol, const std::string& what) {
  check_close(download(got), want, tol.rtol, tol.atol, what);
}

void require_gpu() { REQUIRE(cuda_device_count() > 0); }

// The helpers upload with cudaMemcpy/cudaMemset on the legacy default stream,
// which is not ordered with the backend's non-blocking stream: wait for all
// of it before an op reads the data.
void settle() { cuda::check(cudaDeviceSynchronize(), "test sync"); }

template <typename F>
std::string logic_error_of(F&& f) {
  try {
    f();
  } catch (const std::logic_error& e) {
    return e.what();
  }
  return "(no std::logic_error thrown)";
}

TEST_CASE("an op's device scratch does not move while a CUDA graph may hold its address") {
  require_gpu();
  // rmsnorm_backward keeps chunks x D floats of partials: 2 chunks at 512 rows,
  // 64 (the cap) at 16384 rows; D = 64 makes the second larger than any above.
  const int64_t D = 64, small = 512, large = 16384;
  auto tensors = [D](int64_t N) {
    std::vector<DeviceTensor> t;
    for (const std::vector<int64_t>& shape : {std::vector<int64_t>{N, D}, {D}, {N, D}, {N}, {N, D}, {D}}) {
      t.push_back(upload(random_vector(static_cast<size_t>(shape[0] * (shape.size() > 1 ? shape[1] : 1)), 3), shape,
                         DType::kF32));
    }
    return t;
  };
  const std::vector<DeviceTensor> a = tensors(small), b = tensors(large);
  auto backward = [](const std::vector<DeviceTensor>& t) {
    ops::rmsnorm_backward(t[4].t, t[5].t, t[2].t, t[0].t, t[1].t, t[3].t, t[4].t);
  };
  ops::reserve_rmsnorm_backward(Device::kCuda, small, D);
  {
    StreamGraph graph;
    graph.capture([&] { backward(a); });
    graph.replay();
    CHECK_THROWS_WITH(backward(b), Catch::Contains("rmsnorm_backward: its dw scratch needs 16384 bytes") &&
                                       Catch::Contains("a CUDA graph that may hold its address is alive"));
    graph.replay();  // the graph's buffer is still there
    cuda::check(cudaStreamSynchronize(cuda::stream()), "replay");
  }
  // With no graph alive, it may grow.
  CHECK_NOTHROW(backward(b));
  cuda::check(cudaStreamSynchronize(cuda::stream()), "grown");
}

// ---- fused multi-tensor ops (sum_squares_many, adamw_step_many) --------------------------

constexpr int64_t kChunk = 16384;  // multi_tensor.cuh's chunk: the sizes below straddle it

// `count` tensor sizes: mostly small and odd, every 7th empty, a few of
// several chunks (the first and last chunks of a tensor are partial).
std::vector<int64_t> list_sizes(size_t count, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> small(1, 300);
  std::vector<int64_t> sizes(count);
  for (size_t i = 0; i < count; ++i) sizes[i] = i % 7 == 3 ? 0 : small(gen);
  sizes[1] = 3 * kChunk + 5;
  sizes[count / 2] = kChunk;
  sizes[count - 1] = kChunk + 1;
  return sizes;
}

int64_t total_of(const std::vector<int64_t>& sizes) {
  int64_t total = 0;
  for (int64_t n : sizes) total += n;
  return total;
}

// Consecutive pieces of one 1-D tensor, as the pool hands out shards (no
// alignment beyond a float's), empty pieces included.
std::vector<Tensor> pieces_of(const Tensor& whole_N, const std::vector<int64_t>& sizes) {
  std::vector<Tensor> out;
  int64_t begin = 0;
  for (int64_t n : sizes) {
    out.push_back(whole_N.rows(begin, n));
    begin += n;
  }
  return out;
}

Tensor host_view(Vec& v) { return view_of(v.data(), {static_cast<int64_t>(v.size())}); }

bool same_bits(const Vec& a, const Vec& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST_CASE("sum_squares_many on the GPU matches the CPU's sum over the list, deterministically") {
  require_gpu();
  // A short list, then one of more tensors and more chunks than the 1024
  // blocks of the launch (each block takes several chunks; the table grows),
  // then the short one again (re-uploaded into the grown table), then a list
  // with a tensor of 5000011 elements among small ones.
  const std::vector<int64_t> few = {37, 0, 3 * kChunk + 5, 1, kChunk, 0, 1001};
  std::vector<int64_t> large = list_sizes(40, 30);
  large[20] = 5000011;
  for (const auto& sizes : {few, list_sizes(1500, 31), few, large}) {
    const int64_t total = total_of(sizes);
    INFO(sizes.size() << " tensors, " << total << " elements");
    Vec x = random_vector(total, 32, 3.0f);
    DeviceTensor d_x = upload(x, {total}, DType::kF32);
    settle();
    const double want = ops::sum_squares_many(pieces_of(host_view(x), sizes));
    const std::vector<Tensor> d_xs = pieces_of(d_x.t, sizes);
    const double got = ops::sum_squares_many(d_xs);
    CHECK(std::abs(got - want) <= 1e-9 * std::abs(want));
    CHECK(ops::sum_squares_many(d_xs) == got);  // bitwise, run to run (the table is not uploaded again)
  }
  CHECK(ops::sum_squares_many({}) == 0.0);
}

// One slot per piece of four whole tensors; matrices and vectors alternate in weight decay.
std::vector<ops::AdamWSlot> slots_of(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                                     const std::vector<int64_t>& sizes, size_t count) {
  const std::vector<Tensor> ps = pieces_of(param, sizes), gs = pieces_of(grad, sizes), ms = pieces_of(m, sizes),
                            vs = pieces_of(v, sizes);
  std::vector<ops::AdamWSlot> slots;
  for (size_t i = 0; i < count; ++i) slots.push_back({ps[i], gs[i], ms[i], vs[i], i % 2 ? 0.0f : 0.1f});
  return slots;
}

TEST_CASE("adamw_step_many on the GPU follows the CPU over several steps, all tensors in one launch") {
  require_gpu();
  const ops::AdamWShared hyper{1e-3f, 0.9f, 0.95f, 1e-8f};
  const float grad_scale = 0.5f;
  std::vector<int64_t> sizes = list_sizes(300, 33);  // apex's multi_tensor_apply takes 110 per launch
  // Pieces at any float offset update one element at a time; with sizes of
  // whole 16-byte words every piece is aligned and updates eight at a time,
  // then its last < 8 elements one by one (the last piece, kChunk + 1, ends
  // with one single element).
  const bool aligned = GENERATE(false, true);
  INFO((aligned ? "16-byte aligned pieces" : "pieces at any offset"));
  if (aligned) {
    for (size_t i = 0; i + 1 < sizes.size(); ++i) sizes[i] = (sizes[i] + 3) / 4 * 4;
  }
  const int64_t total = total_of(sizes);
  const Vec param0 = random_vector(total, 34);
  // The same four steps twice, from the same state: the final bits must agree.
  std::vector<Vec> finals;
  for (int run = 0; run < 2; ++run) {
    Vec param = param0, m(total, 0.0f), v(total, 0.0f);
    DeviceTensor d_param = upload(param, {total}, DType::kF32);
    DeviceTensor d_m = upload(m, {total}, DType::kF32);
    DeviceTensor d_v = upload(v, {total}, DType::kF32);
    DeviceTensor d_grad = device_tensor({total}, DType::kF32);  // one buffer, as the optimizer's gradients
    for (int64_t step = 1; step <= 4; ++step) {
      // Step 2 reuses the table of step 1; step 3 updates the first half of
      // the list only (the table changes), step 4 all of it again.
      const size_t count = step == 3 ? sizes.size() / 2 : sizes.size();
      INFO("run " << run << ", step " << step << ", " << count << " tensors");
      Vec grad = random_vector(total, 35 + static_cast<uint32_t>(step));
      grad[0] = 0.0f;
      cuda::check(cudaMemcpy(d_grad.t.data, grad.data(), grad.size() * sizeof(float), cudaMemcpyHostToDevice),
                  "test upload");
      settle();
      ops::adamw_step_many(slots_of(host_view(param), host_view(grad), host_view(m), host_view(v), sizes, count), hyper,
                           step, grad_scale);
      ops::adamw_step_many(slots_of(d_param.t, d_grad.t, d_m.t, d_v.t, sizes, count), hyper, step, grad_scale);
      expect_close(d_param.t, param, {1e-6, 1e-10}, "adamw_step_many param");
      expect_close(d_m.t, m, {1e-6, 1e-10}, "adamw_step_many m");
      expect_close(d_v.t, v, {1e-6, 1e-10}, "adamw_step_many v");
    }
    finals.push_back(download(d_param.t));
    finals.push_back(download(d_m.t));
    finals.push_back(download(d_v.t));
  }
  CHECK(same_bits(finals[0], finals[3]));  // param, run to run
  CHECK(same_bits(finals[1], finals[4]));  // m
  CHECK(same_bits(finals[2], finals[5]));  // v
}

TEST_CASE("adamw_step_many on the GPU writes the bf16 compute copies of the updated weights") {
  require_gpu();
  const ops::AdamWShared hyper{1e-3f, 0.9f, 0.95f, 1e-8f};
  const std::vector<int64_t> sizes = list_sizes(40, 36);
  const int64_t total = total_of(sizes);
  DeviceTensor d_param = upload(random_vector(total, 37), {total}, DType::kF32);
  DeviceTensor d_grad = upload(random_vector(total, 38), {total}, DType::kF32);
  DeviceTensor d_m = device_tensor({total}, DType::kF32), d_v = device_tensor({total}, DType::kF32);
  DeviceTensor d_copy = device_tensor({total}, DType::kBF16);
  settle();
  std::vector<ops::AdamWSlot> slots = slots_of(d_param.t, d_grad.t, d_m.t, d_v.t, sizes, sizes.size());
  const std::vector<Tensor> copies = pieces_of(d_copy.t, sizes);
  for (size_t i = 0; i < slots.size(); ++i) slots[i].compute = copies[i];
  ops::adamw_step_many(slots, hyper, 1, 1.0f);
  const Vec param = download(d_param.t);
  std::vector<uint16_t> copy(static_cast<size_t>(total));
  cuda::check(cudaStreamSynchronize(cuda::stream()), "test sync");
  cuda::check(cudaMemcpy(copy.data(), d_copy.t.data, copy.size() * 2, cudaMemcpyDeviceToHost), "test download");
  int64_t wrong = 0;
  for (size_t i = 0; i < param.size(); ++i) wrong += copy[i] != moe::f32_to_bf16(param[i]);
  CHECK(wrong == 0);
}

// ---- dtype checks --------------------------------------------------------------------------

TEST_CASE("the dense CUDA ops refuse unsupported dtypes, naming the op and the dtypes") {
  require_gpu();
  DeviceTensor f32_ND = device_tensor({4, 8}, DType::kF32);
  DeviceTensor bf16_ND = device_tensor({4, 8}, DType::kBF16);
  DeviceTensor i32_ND = device_tensor({4, 8}, DType::kI32);
  DeviceTensor bf16_N = device_tensor({4}, DType::kBF16);
  DeviceTensor f32_D = device_tensor({8}, DType::kF32);
  DeviceTensor i32_N = device_tensor({4}, DType::kI32);
  DeviceTensor f32_N = device_tensor({4}, DType::kF32);
  settle();
  using Catch::Matchers::Contains;
  CHECK_THAT(logic_error_of([&] { ops::rmsnorm_forward(f32_ND.t, bf16_N.t, f32_ND.t, f32_D.t, 1e-5f); }),
             Contains("rmsnorm_forward") && Contains("bf16"));
  CHECK_THAT(logic_error_of([&] { ops::embedding_backward(bf16_ND.t, f32_ND.t, i32_N.t); }),
             Contains("embedding_backward") && Contains("bf16"));
  CHECK_THAT(logic_error_of([&] { ops::embedding_forward(f32_ND.t, f32_N.t, f32_ND.t); }),
             Contains("embedding_forward") && Contains("tokens [4] f32"));
  CHECK_THAT(logic_error_of([&] { ops::cross_entropy_forward_backward(f32_N.t, f32_ND.t, bf16_ND.t, i32_N.t, 1.0f); }),
             Contains("cross_entropy_forward_backward") && Contains("dlogits [4, 8] f32"));
  CHECK_THAT(logic_error_of([&] { ops::adamw_step(bf16_ND.t, f32_ND.t, f32_ND.t, f32_ND.t, {}, 1, 1.0f); }),
             Contains("adamw_step") && Contains("bf16"));
  CHECK_THAT(logic_error_of([&] { ops::add(i32_ND.t, f32_ND.t, f32_ND.t); }), Contains("add") && Contains("i32"));
  CHECK_THAT(logic_error_of([&] { ops::swiglu_forward(f32_ND.t, f32_ND.t, bf16_ND.t); }),
             Contains("swiglu_forward") && Contains("bf16"));
  CHECK_THAT(logic_error_of([&] { ops::sum_squares(i32_ND.t); }), Contains("sum_squares") && Contains("i32"));
  // The fused ops: checked in ops.cc, and again by the backend for direct callers.
  CHECK_THAT(logic_error_of([&] {
               ops::sum_squares_many({f32_ND.t, bf16_ND.t});
             }),
             Contains("sum_squares_many") && Contains("tensor 1") && Contains("bf16"));
  CHECK_THAT(logic_error_of([&] {
               cuda::sum_squares_many({f32_ND.t, bf16_ND.t});
             }),
             Contains("sum_squares_many") && Contains("tensor 1") && Contains("bf16"));
  const ops::AdamWSlot bf16_slot{bf16_ND.t, f32_ND.t, f32_ND.t, f32_ND.t, 0.0f};
  CHECK_THAT(logic_error_of([&] {
               ops::adamw_step_many({bf16_slot}, {1e-3f, 0.9f, 0.95f, 1e-8f}, 1, 1.0f);
             }),
             Contains("adamw_step_many") && Contains("slot 0") && Contains("bf16"));
  CHECK_THAT(logic_error_of([&] { cuda::adamw_step_many({bf16_slot}, 1e-3f, 0.9f, 0.95f, 1e-8f, 1, 1.0f); }),
             Contains("adamw_step_many") && Contains("slot 0") && Contains("bf16"));
  CHECK_THAT(logic_error_of([&] {
               ops::rope_forward(bf16_ND.t.reshaped({1, 1, 4, 8}), 1e4f);
             }),
             Contains("(no std::logic_error thrown)"));  // bf16 is supported
  CHECK_THAT(logic_error_of([&] {
               ops::rope_forward(i32_ND.t.reshaped({1, 1, 4, 8}), 1e4f);
             }),
             Contains("rope_forward") && Contains("i32"));
  settle();
}

}  // namespace
}  // namespace moe
