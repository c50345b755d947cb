// The NCCL communicator on the GPUs at hand: every collective against results
// computed by hand from the rank and group size, in fp32, bf16 and i32,
// including zero-row exchanges and nested sub-groups. Run alone it is a group
// of one GPU (Bazel runs it so where a GPU is); under mpirun each rank takes
// the GPU of its local rank and the same checks hold for any group size:
//   mpirun -np 4 bazel-bin/tests/parallel/nccl_communicator_gpu_test
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <stdexcept>
#include <memory>
#include <vector>

#include "src/core/bf16.h"
#include "src/core/cuda_device.h"
#include "src/core/tensor_pool.h"
#include "src/parallel/launch_env.h"
#include "src/parallel/nccl_communicator.h"

namespace {

std::unique_ptr<moe::Communicator> host_world;
std::unique_ptr<moe::NcclCommunicator> world;

void cuda_ok(cudaError_t s, const char* what) {
  if (s != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(s));
}

// A device tensor for one test, zero-filled; copies go through the group's
// stream, as a caller of the communicator would order them.
class DeviceTensor {
 public:
  DeviceTensor(std::initializer_list<int64_t> shape, moe::DType dtype) {
    t_.ndim = static_cast<int>(shape.size());
    std::copy(shape.begin(), shape.end(), t_.shape.begin());
    t_.dtype = dtype;
    t_.device = moe::Device::kCuda;
    const size_t bytes = static_cast<size_t>(std::max<int64_t>(t_.bytes(), 1));
    cuda_ok(cudaMalloc(&t_.data, bytes), "cudaMalloc");
    cuda_ok(cudaMemset(t_.data, 0, bytes), "cudaMemset");
  }
  ~DeviceTensor() { cudaFree(t_.data); }
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;

  const moe::Tensor& t() const { return t_; }

  template <class T>
  void upload(const std::vector<T>& v, cudaStream_t s) {
    REQUIRE(static_cast<int64_t>(v.size() * sizeof(T)) == t_.bytes());
    cuda_ok(cudaMemcpyAsync(t_.data, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice, s), "upload");
    cuda_ok(cudaStreamSynchronize(s), "upload sync");
  }
  template <class T>
  std::vector<T> download(cudaStream_t s) const {
    std::vector<T> v(static_cast<size_t>(t_.bytes()) / sizeof(T));
    cuda_ok(cudaMemcpyAsync(v.data(), t_.data, v.size() * sizeof(T), cudaMemcpyDeviceToHost, s), "download");
    cuda_ok(cudaStreamSynchronize(s), "download sync");
    return v;
  }

 private:
  moe::Tensor t_;
};

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = moe::f32_to_bf16(v[i]);
  return h;
}

std::vector<float> from_bf16(const std::vector<uint16_t>& h) {
  std::vector<float> v(h.size());
  for (size_t i = 0; i < h.size(); ++i) v[i] = moe::bf16_to_f32(h[i]);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  // The GPU is chosen before the communicator binds to it: one per local rank.
  const moe::LaunchEnv env = moe::read_launch_env();
  const int gpus = moe::cuda_device_count();
  if (env.local_rank >= gpus) {
    std::fprintf(stderr, "rank %lld: local rank %lld needs a GPU of its own, %d visible\n",
                 static_cast<long long>(env.rank), static_cast<long long>(env.local_rank), gpus);
    return 1;
  }
  cuda_ok(cudaSetDevice(static_cast<int>(env.local_rank)), "cudaSetDevice");
  moe::ensure_mpi_initialized();
  host_world = moe::mpi_world();
  world = moe::nccl_world(*host_world);
  const int failed = Catch::Session().run(argc, argv);
  world.reset();
  host_world.reset();
  return failed ? 1 : 0;
}

TEST_CASE("the NCCL group has the host group's ranks and a stream") {
  CHECK(world->rank() == host_world->rank());
  CHECK(world->size() == host_world->size());
  CHECK(world->stream() != nullptr);
}

TEST_CASE("a batch of collectives (one NCCL group) gives what each gives alone") {
  const int r = world->rank(), n = world->size();
  const cudaStream_t s = world->stream();
  // Three all-gathers and two reduce-scatters of different sizes, batched.
  std::vector<std::unique_ptr<DeviceTensor>> ins, outs, grads, pieces;
  for (int64_t k : {1, 5, 1000}) {
    ins.push_back(std::make_unique<DeviceTensor>(std::initializer_list<int64_t>{k}, moe::DType::kF32));
    outs.push_back(std::make_unique<DeviceTensor>(std::initializer_list<int64_t>{k * n}, moe::DType::kF32));
    ins.back()->upload(std::vector<float>(static_cast<size_t>(k), static_cast<float>(r + 1)), s);
  }
  for (int64_t k : {3, 700}) {
    grads.push_back(std::make_unique<DeviceTensor>(std::initializer_list<int64_t>{k * n}, moe::DType::kF32));
    pieces.push_back(std::make_unique<DeviceTensor>(std::initializer_list<int64_t>{k}, moe::DType::kF32));
    grads.back()->upload(std::vector<float>(static_cast<size_t>(k * n), 1.0f), s);
  }
  {
    moe::CollectiveBatch batch(*world);
    for (size_t i = 0; i < ins.size(); ++i) world->all_gather(outs[i]->t(), ins[i]->t());
    for (size_t i = 0; i < grads.size(); ++i) world->reduce_scatter(pieces[i]->t(), grads[i]->t(), moe::ReduceOp::kSum);
  }
  for (size_t i = 0; i < outs.size(); ++i) {
    const std::vector<float> got = outs[i]->download<float>(s);
    const size_t k = got.size() / static_cast<size_t>(n);
    for (size_t j = 0; j < got.size(); ++j) CHECK(got[j] == static_cast<float>(j / k + 1));
  }
  for (const auto& piece : pieces) {
    for (float x : piece->download<float>(s)) CHECK(x == static_cast<float>(n));
  }
}

TEST_CASE("all_reduce: sum, avg, max in fp32, bf16 and i32") {
  const int r = world->rank(), n = world->size();
  const cudaStream_t s = world->stream();
  const float rank_sum = static_cast<float>(n * (n - 1) / 2);

  // More elements than one NCCL slice, so a real ring/tree pass runs.
  const int64_t big = 1 << 20;
  DeviceTensor t({big}, moe::DType::kF32);
  std::vector<float> v(big);
  for (int64_t i = 0; i < big; ++i) v[i] = static_cast<float>(i % 1000 + r);
  t.upload(v, s);
  world->all_reduce(t.t(), moe::ReduceOp::kSum);
  auto sum = t.download<float>(s);
  for (int64_t i = 0; i < big; i += 4099) CHECK(sum[i] == static_cast<float>(n * (i % 1000)) + rank_sum);
  CHECK(sum[big - 1] == static_cast<float>(n * ((big - 1) % 1000)) + rank_sum);

  DeviceTensor f({3}, moe::DType::kF32);
  f.upload(std::vector<float>(3, static_cast<float>(r)), s);
  world->all_reduce(f.t(), moe::ReduceOp::kAvg);
  for (float x : f.download<float>(s)) CHECK(x == Approx(rank_sum / n));
  f.upload(std::vector<float>(3, static_cast<float>(r == 1 ? 7 : -r)), s);
  world->all_reduce(f.t(), moe::ReduceOp::kMax);
  for (float x : f.download<float>(s)) CHECK(x == (n > 1 ? 7.0f : 0.0f));

  DeviceTensor h({2}, moe::DType::kBF16);
  h.upload(to_bf16({0.5f, static_cast<float>(r)}), s);
  world->all_reduce(h.t(), moe::ReduceOp::kSum);
  auto hs = from_bf16(h.download<uint16_t>(s));
  CHECK(hs[0] == 0.5f * n);
  CHECK(hs[1] == rank_sum);
  h.upload(to_bf16({static_cast<float>(2 * r), 4.0f}), s);
  world->all_reduce(h.t(), moe::ReduceOp::kAvg);  // 1/n may round in bf16: loose
  auto ha = from_bf16(h.download<uint16_t>(s));
  CHECK(ha[0] == Approx(static_cast<float>(n - 1)).epsilon(0.02).margin(0.02));
  CHECK(ha[1] == Approx(4.0f).epsilon(0.02));
  h.upload(to_bf16({r == 0 ? -3.0f : static_cast<float>(r), -static_cast<float>(r)}), s);
  world->all_reduce(h.t(), moe::ReduceOp::kMax);
  auto hm = from_bf16(h.download<uint16_t>(s));
  CHECK(hm[0] == (n > 1 ? static_cast<float>(n - 1) : -3.0f));
  CHECK(hm[1] == 0.0f);

  DeviceTensor c({2}, moe::DType::kI32);
  c.upload(std::vector<int32_t>{r + 1, 5 - r}, s);
  world->all_reduce(c.t(), moe::ReduceOp::kSum);
  auto cs = c.download<int32_t>(s);
  CHECK(cs[0] == n * (n + 1) / 2);
  CHECK(cs[1] == 5 * n - n * (n - 1) / 2);
  c.upload(std::vector<int32_t>{r + 1, 5 - r}, s);
  world->all_reduce(c.t(), moe::ReduceOp::kMax);
  auto cm = c.download<int32_t>(s);
  CHECK(cm[0] == n);
  CHECK(cm[1] == 5);
}

TEST_CASE("all_gather concatenates in rank order, fp32 and bf16") {
  const int r = world->rank(), n = world->size();
  const cudaStream_t s = world->stream();
  std::vector<float> mine(4);
  for (int i = 0; i < 4; ++i) mine[i] = static_cast<float>(100 * r + i);

  DeviceTensor in({2, 2}, moe::DType::kF32), all({2 * n, 2}, moe::DType::kF32);
  in.upload(mine, s);
  world->all_gather(all.t(), in.t());
  auto got = all.download<float>(s);
  for (int p = 0; p < n; ++p) {
    for (int i = 0; i < 4; ++i) CHECK(got[p * 4 + i] == static_cast<float>(100 * p + i));
  }

  DeviceTensor hin({2, 2}, moe::DType::kBF16), hall({2 * n, 2}, moe::DType::kBF16);
  hin.upload(to_bf16(mine), s);
  world->all_gather(hall.t(), hin.t());
  auto hgot = from_bf16(hall.download<uint16_t>(s));
  for (int p = 0; p < n; ++p) {
    for (int i = 0; i < 4; ++i) CHECK(hgot[p * 4 + i] == static_cast<float>(100 * p + i));
  }
}

TEST_CASE("reduce_scatter gives rank r block r of the reduction, fp32, bf16 and i32") {
  const int r = world->rank(), n = world->size();
  const cudaStream_t s = world->stream();
  // Element i of rank q's input is i + q; rank r keeps elements 3r .. 3r+2.
  std::vector<float> full(3 * n);
  for (int i = 0; i < 3 * n; ++i) full[i] = static_cast<float>(i + r);

  DeviceTensor in({n, 3}, moe::DType::kF32), out({1, 3}, moe::DType::kF32);
  in.upload(full, s);
  world->reduce_scatter(out.t(), in.t(), moe::ReduceOp::kSum);
  auto got = out.download<float>(s);
  for (int j = 0; j < 3; ++j) CHECK(got[j] == static_cast<float>(n * (3 * r + j) + n * (n - 1) / 2));
  world->reduce_scatter(out.t(), in.t(), moe::ReduceOp::kAvg);
  got = out.download<float>(s);
  for (int j = 0; j < 3; ++j) CHECK(got[j] == Approx(3 * r + j + (n - 1) / 2.0));

  DeviceTensor hin({n, 3}, moe::DType::kBF16), hout({1, 3}, moe::DType::kBF16);
  hin.upload(to_bf16(full), s);
  world->reduce_scatter(hout.t(), hin.t(), moe::ReduceOp::kMax);
  auto hgot = from_bf16(hout.download<uint16_t>(s));
  for (int j = 0; j < 3; ++j) CHECK(hgot[j] == static_cast<float>(3 * r + j + n - 1));

  std::vector<int32_t> ifull(3 * n);
  for (int i = 0; i < 3 * n; ++i) ifull[i] = i + r;
  DeviceTensor iin({n, 3}, moe::DType::kI32), iout({1, 3}, moe::DType::kI32);
  iin.upload(ifull, s);
  world->reduce_scatter(iout.t(), iin.t(), moe::ReduceOp::kSum);
  auto igot = iout.download<int32_t>(s);
  for (int j = 0; j < 3; ++j) CHECK(igot[j] == n * (3 * r + j) + n * (n - 1) / 2);
}

TEST_CASE("broadcast from the last rank, fp32 and i32") {
  const int r = world->rank(), n = world->size();
  const cudaStream_t s = world->stream();
  const int root = n - 1;
  DeviceTensor t({4}, moe::DType::kF32);
  std::vector<float> v(4);
  for (int i = 0; i < 4; ++i) v[i] = r == root ? 3.5f * i : -1.0f;
  t.upload(v, s);
  world->broadcast(t.t(), root);
  auto got = t.download<float>(s);
  for (int i = 0; i < 4; ++i) CHECK(got[i] == 3.5f * i);

  DeviceTensor c({3}, moe::DType::kI32);
  c.upload(std::vector<int32_t>(3, r == root ? 42 : r), s);
  world->broadcast(c.t(), root);
  for (int32_t x : c.download<int32_t>(s)) CHECK(x == 42);
}

TEST_CASE("all_to_all_v with uneven and zero counts, fp32 and bf16") {
  const int r = world->rank(), n = world->size();
  const cudaStream_t s = world->stream();
  // Rank r sends (r + p + shift) % 3 rows to peer p, the k-th being [r, p, k];
  // shift 0 on one rank is an exchange of nothing at all.
  for (int shift = 0; shift < 3; ++shift) {
    INFO("shift " << shift);
    std::vector<int64_t> send(n), recv(n);
    for (int p = 0; p < n; ++p) {
      send[p] = (r + p + shift) % 3;
      recv[p] = (p + r + shift) % 3;
    }
    const int64_t total_send = std::accumulate(send.begin(), send.end(), int64_t{0});
    const int64_t total_recv = std::accumulate(recv.begin(), recv.end(), int64_t{0});
    std::vector<float> rows(3 * std::max<int64_t>(total_send, 1), -1.0f);
    int64_t row = 0;
    for (int p = 0; p < n; ++p) {
      for (int64_t k = 0; k < send[p]; ++k, ++row) {
        rows[row * 3 + 0] = static_cast<float>(r);
        rows[row * 3 + 1] = static_cast<float>(p);
        rows[row * 3 + 2] = static_cast<float>(k);
      }
    }
    const int64_t in_rows = std::max<int64_t>(total_send, 1), out_rows = std::max<int64_t>(total_recv, 1);

    for (moe::DType dtype : {moe::DType::kF32, moe::DType::kBF16}) {
      INFO("dtype " << moe::dtype_name(dtype));
      DeviceTensor in({in_rows, 3}, dtype), out({out_rows, 3}, dtype);
      if (dtype == moe::DType::kF32) {
        in.upload(rows, s);
      } else {
        in.upload(to_bf16(rows), s);
      }
      world->all_to_all_v(out.t(), recv, in.t(), send);
      const std::vector<float> got =
          dtype == moe::DType::kF32 ? out.download<float>(s) : from_bf16(out.download<uint16_t>(s));
      row = 0;
      for (int p = 0; p < n; ++p) {
        for (int64_t k = 0; k < recv[p]; ++k, ++row) {
          CHECK(got[row * 3 + 0] == static_cast<float>(p));
          CHECK(got[row * 3 + 1] == static_cast<float>(r));
          CHECK(got[row * 3 + 2] == static_cast<float>(k));
        }
      }
    }
  }
}

TEST_CASE("split makes NCCL sub-groups ordered by key, and they split again") {
  const int r = world->rank(), n = world->size();
  auto group = world->split_nccl(r % 2, -r);  // reverse order inside each parity group
  const int members = (n - r % 2 + 1) / 2;
  REQUIRE(group->size() == members);
  CHECK(group->stream() == world->stream());  // every group runs on the backend's one stream
  const cudaStream_t s = group->stream();

  DeviceTensor t({1}, moe::DType::kF32);
  t.upload(std::vector<float>{static_cast<float>(r)}, s);
  group->all_reduce(t.t(), moe::ReduceOp::kSum);
  float expected = 0, highest = 0;
  for (int p = r % 2; p < n; p += 2) {
    expected += static_cast<float>(p);
    highest = static_cast<float>(p);
  }
  CHECK(t.download<float>(s)[0] == expected);
  // Key -r: the highest world rank is rank 0 of its group.
  t.upload(std::vector<float>{static_cast<float>(r)}, s);
  group->broadcast(t.t(), 0);
  CHECK(t.download<float>(s)[0] == highest);
  group->barrier();

  // Through the Communicator interface, a split of the split (it owns its host group).
  std::unique_ptr<moe::Communicator> single = group->split(group->rank(), 0);
  auto* nccl = dynamic_cast<moe::NcclCommunicator*>(single.get());
  REQUIRE(nccl != nullptr);
  CHECK(single->size() == 1);
  CHECK(single->rank() == 0);
  DeviceTensor h({2}, moe::DType::kBF16);
  h.upload(to_bf16({1.5f, -2.0f}), nccl->stream());
  single->all_reduce(h.t(), moe::ReduceOp::kSum);
  auto hs = from_bf16(h.download<uint16_t>(nccl->stream()));
  CHECK(hs[0] == 1.5f);
  CHECK(hs[1] == -2.0f);
  single->barrier();
}

TEST_CASE("barrier waits for what is queued on the stream") {
  const int n = world->size();
  DeviceTensor t({1 << 16}, moe::DType::kF32);
  t.upload(std::vector<float>(1 << 16, 1.0f), world->stream());
  world->all_reduce(t.t(), moe::ReduceOp::kSum);
  world->barrier();
  // No stream sync of ours: barrier() has waited for the all-reduce.
  float last = 0;
  cuda_ok(cudaMemcpy(&last, static_cast<float*>(t.t().data) + (1 << 16) - 1, sizeof last, cudaMemcpyDeviceToHost),
          "read back");
  CHECK(last == static_cast<float>(n));
}

TEST_CASE("host tensors and integer averages are refused, naming the op") {
  moe::TensorPool pool;
  moe::Tensor host = pool.alloc({4});
  CHECK_THROWS_AS(world->all_reduce(host, moe::ReduceOp::kSum), std::logic_error);
  CHECK_THROWS_WITH(world->all_reduce(host, moe::ReduceOp::kSum), Catch::Contains("all_reduce"));
  CHECK_THROWS_WITH(world->broadcast(host, 0), Catch::Contains("broadcast"));
  CHECK_THROWS_WITH(world->all_gather(host, host), Catch::Contains("all_gather"));
  CHECK_THROWS_WITH(world->reduce_scatter(host, host, moe::ReduceOp::kSum), Catch::Contains("reduce_scatter"));
  std::vector<int64_t> zeros(world->size(), 0);
  CHECK_THROWS_WITH(world->all_to_all_v(host, zeros, host, zeros), Catch::Contains("all_to_all_v"));

  DeviceTensor c({1}, moe::DType::kI32);
  CHECK_THROWS_AS(world->all_reduce(c.t(), moe::ReduceOp::kAvg), std::logic_error);
  CHECK_THROWS_AS(world->broadcast(c.t(), world->size()), std::logic_error);
}
