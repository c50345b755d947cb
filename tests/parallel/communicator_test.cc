// The MPI communicator on CPU ranks (run under mpirun by communicator_test.sh):
// every collective against what each rank can compute by itself, fp32, bf16
// and i32, including zero-length exchanges and sub-groups.
#include <catch2/catch.hpp>
#include <mpi.h>

#include <numeric>
#include <string>
#include <vector>

#include "src/core/bf16.h"
#include "src/core/tensor_pool.h"
#include "src/parallel/communicator.h"
#include "tests/parallel/mpi_test_main.h"

using moe::test::test_world;

TEST_CASE("all_reduce: sum, avg, max in fp32; sum in bf16 and i32") {
  const int r = test_world().rank(), n = test_world().size();
  moe::TensorPool pool;
  moe::Tensor t = pool.alloc({3});
  for (int i = 0; i < 3; ++i) t.f32()[i] = static_cast<float>(r + 10 * i);
  test_world().all_reduce(t, moe::ReduceOp::kSum);
  const float rank_sum = static_cast<float>(n * (n - 1) / 2);
  CHECK(t.f32()[0] == rank_sum);
  CHECK(t.f32()[2] == rank_sum + 20.0f * n);

  for (int i = 0; i < 3; ++i) t.f32()[i] = static_cast<float>(r);
  test_world().all_reduce(t, moe::ReduceOp::kAvg);
  CHECK(t.f32()[1] == Approx(rank_sum / n));
  for (int i = 0; i < 3; ++i) t.f32()[i] = static_cast<float>(r == 1 ? 7 : -r);
  test_world().all_reduce(t, moe::ReduceOp::kMax);
  CHECK(t.f32()[0] == (n > 1 ? 7.0f : 0.0f));

  moe::Tensor h = pool.alloc({2}, moe::DType::kBF16);
  auto* hv = static_cast<uint16_t*>(h.data);
  hv[0] = moe::f32_to_bf16(0.5f);
  hv[1] = moe::f32_to_bf16(static_cast<float>(r));
  test_world().all_reduce(h, moe::ReduceOp::kSum);
  CHECK(moe::bf16_to_f32(hv[0]) == 0.5f * n);
  CHECK(moe::bf16_to_f32(hv[1]) == rank_sum);

  moe::Tensor c = pool.alloc({1}, moe::DType::kI32);
  c.i32()[0] = r + 1;
  test_world().all_reduce(c, moe::ReduceOp::kSum);
  CHECK(c.i32()[0] == n * (n + 1) / 2);
}

TEST_CASE("all_gather concatenates in rank order; reduce_scatter gives rank r block r of the sum") {
  const int r = test_world().rank(), n = test_world().size();
  moe::TensorPool pool;
  moe::Tensor in = pool.alloc({2, 2});
  for (int i = 0; i < 4; ++i) in.f32()[i] = static_cast<float>(100 * r + i);
  moe::Tensor all = pool.alloc({2 * n, 2});
  test_world().all_gather(all, in);
  for (int p = 0; p < n; ++p) {
    for (int i = 0; i < 4; ++i) CHECK(all.f32()[p * 4 + i] == static_cast<float>(100 * p + i));
  }

  moe::Tensor full = pool.alloc({n, 3});
  for (int i = 0; i < 3 * n; ++i) full.f32()[i] = static_cast<float>(i + r);
  moe::Tensor mine = pool.alloc({1, 3});
  test_world().reduce_scatter(mine, full, moe::ReduceOp::kSum);
  for (int j = 0; j < 3; ++j) CHECK(mine.f32()[j] == static_cast<float>(n * (3 * r + j) + n * (n - 1) / 2));
}

TEST_CASE("broadcast from a non-zero root") {
  const int n = test_world().size();
  moe::TensorPool pool;
  moe::Tensor t = pool.alloc({4});
  const int root = n - 1;
  for (int i = 0; i < 4; ++i) t.f32()[i] = test_world().rank() == root ? 3.5f * i : -1.0f;
  test_world().broadcast(t, root);
  for (int i = 0; i < 4; ++i) CHECK(t.f32()[i] == 3.5f * i);
}

TEST_CASE("all_gather_bytes: strings of every length, the empty one included, in rank order") {
  const int n = test_world().size();
  auto text_of = [](int r) {
    std::string t;
    for (int i = 0; i < 3 * r + (r % 2); ++i) t += static_cast<char>('a' + (r + i) % 26);
    return t;
  };
  const std::vector<std::string> all = moe::all_gather_bytes(test_world(), text_of(test_world().rank()));
  REQUIRE(all.size() == static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) CHECK(all[static_cast<size_t>(r)] == text_of(r));
}

TEST_CASE("all_to_all_v with uneven and zero counts (as an expert dispatch with idle experts)") {
  const int r = test_world().rank(), n = test_world().size();
  moe::TensorPool pool;
  // Rank r sends (r + p) % 3 rows to peer p, each row [r, p, k] for k-th row.
  std::vector<int64_t> send(n), recv(n);
  for (int p = 0; p < n; ++p) {
    send[p] = (r + p) % 3;
    recv[p] = (p + r) % 3;
  }
  const int64_t total_send = std::accumulate(send.begin(), send.end(), int64_t{0});
  const int64_t total_recv = std::accumulate(recv.begin(), recv.end(), int64_t{0});
  moe::Tensor in = pool.alloc({std::max<int64_t>(total_send, 1), 3});
  moe::Tensor out = pool.alloc({std::max<int64_t>(total_recv, 1), 3});
  int64_t row = 0;
  for (int p = 0; p < n; ++p) {
    for (int64_t k = 0; k < send[p]; ++k, ++row) {
      in.f32()[row * 3 + 0] = static_cast<float>(r);
      in.f32()[row * 3 + 1] = static_cast<float>(p);
      in.f32()[row * 3 + 2] = static_cast<float>(k);
    }
  }
  test_world().all_to_all_v(out, recv, in, send);
  row = 0;
  for (int p = 0; p < n; ++p) {
    for (int64_t k = 0; k < recv[p]; ++k, ++row) {
      CHECK(out.f32()[row * 3 + 0] == static_cast<float>(p));
      CHECK(out.f32()[row * 3 + 1] == static_cast<float>(r));
      CHECK(out.f32()[row * 3 + 2] == static_cast<float>(k));
    }
  }
}

TEST_CASE("send_recv: a pipeline's exchanges, both ways at once, with the ends sending or receiving only") {
  const int r = test_world().rank(), n = test_world().size();
  const int next = r + 1 < n ? r + 1 : -1, prev = r > 0 ? r - 1 : -1;
  moe::TensorPool pool;
  moe::Tensor act = pool.alloc({2, 3}), got = pool.alloc({2, 3});
  for (int i = 0; i < 6; ++i) act.f32()[i] = static_cast<float>(100 * r + i);
  for (int i = 0; i < 6; ++i) got.f32()[i] = -1.0f;
  // Forward: each rank sends to the next and receives from the previous.
  test_world().send_recv(act, next, got, prev);
  for (int i = 0; i < 6; ++i) CHECK(got.f32()[i] == (prev < 0 ? -1.0f : static_cast<float>(100 * prev + i)));
  // Both neighbours exchange at once (a stage sends its output forward while
  // the next sends a gradient back): no rank waits on the other.
  if (n >= 2 && r < 2) {
    moe::Tensor back = pool.alloc({2, 3}, moe::DType::kBF16), mine = pool.alloc({2, 3}, moe::DType::kBF16);
    for (int i = 0; i < 6; ++i) static_cast<uint16_t*>(mine.data)[i] = moe::f32_to_bf16(static_cast<float>(r * 10 + i));
    test_world().send_recv(mine, 1 - r, back, 1 - r);
    for (int i = 0; i < 6; ++i)
      CHECK(moe::bf16_to_f32(static_cast<uint16_t*>(back.data)[i]) == static_cast<float>((1 - r) * 10 + i));
  }
  CHECK_THROWS_AS(test_world().send_recv(act, r, got, -1), std::logic_error);  // not to itself
}

TEST_CASE("split makes sub-groups ordered by key") {
  const int r = test_world().rank(), n = test_world().size();
  auto group = test_world().split(r % 2, -r);  // reverse order inside each parity group
  const int members = (n - r % 2 + 1) / 2;
  CHECK(group->size() == members);
  moe::TensorPool pool;
  moe::Tensor t = pool.alloc({1});
  t.f32()[0] = static_cast<float>(r);
  group->all_reduce(t, moe::ReduceOp::kSum);
  float expected = 0;
  for (int p = r % 2; p < n; p += 2) expected += static_cast<float>(p);
  CHECK(t.f32()[0] == expected);
  // Key -r: the highest world rank is rank 0 of its group.
  moe::Tensor top = pool.alloc({1});
  top.f32()[0] = static_cast<float>(r);
  group->broadcast(top, 0);
  float highest = 0;
  for (int p = r % 2; p < n; p += 2) highest = static_cast<float>(p);
  CHECK(top.f32()[0] == highest);
  group->barrier();
}
