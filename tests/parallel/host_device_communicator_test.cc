// HostDeviceCommunicator sends each collective to the transport of its
// tensors' device, splits both transports, and refuses a mix. The transports
// here are recording fakes: the tensors are never read, only routed.
#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include "src/parallel/host_device_communicator.h"

namespace {

struct Recorder final : moe::Communicator {
  std::string name;
  std::vector<std::string>* log;
  int rank_, size_;
  Recorder(std::string n, std::vector<std::string>* l, int rank = 1, int size = 4)
      : name(std::move(n)), log(l), rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce(const moe::Tensor&, moe::ReduceOp) override { log->push_back(name + " all_reduce"); }
  void all_gather(const moe::Tensor&, const moe::Tensor&) override { log->push_back(name + " all_gather"); }
  void reduce_scatter(const moe::Tensor&, const moe::Tensor&, moe::ReduceOp) override {
    log->push_back(name + " reduce_scatter");
  }
  void broadcast(const moe::Tensor&, int) override { log->push_back(name + " broadcast"); }
  void all_to_all_v(const moe::Tensor&, const std::vector<int64_t>&, const moe::Tensor&,
                    const std::vector<int64_t>&) override {
    log->push_back(name + " all_to_all_v");
  }
  void barrier() override { log->push_back(name + " barrier"); }
  void send_recv(const moe::Tensor&, int, const moe::Tensor&, int) override { log->push_back(name + " send_recv"); }
  void begin_batch() override { log->push_back(name + " begin_batch"); }
  void end_batch() override { log->push_back(name + " end_batch"); }
  std::unique_ptr<moe::Communicator> split(int color, int) override {
    log->push_back(name + " split " + std::to_string(color));
    return std::make_unique<Recorder>(name + "'", log, 0, 2);
  }
};

moe::Tensor tensor_on(moe::Device device, float* storage) {
  return moe::view_of(storage, {2}, moe::DType::kF32, device);
}

}  // namespace

TEST_CASE("each collective goes to the transport of its tensors") {
  std::vector<std::string> log;
  moe::HostDeviceCommunicator group(std::make_unique<Recorder>("mpi", &log), std::make_unique<Recorder>("nccl", &log));
  float a[2], b[4];
  const moe::Tensor host = tensor_on(moe::Device::kCpu, a), host_out = moe::view_of(b, {4});
  const moe::Tensor device = tensor_on(moe::Device::kCuda, a),
                    device_out = moe::view_of(b, {4}, moe::DType::kF32, moe::Device::kCuda);
  CHECK(group.rank() == 1);
  CHECK(group.size() == 4);
  group.all_reduce(host, moe::ReduceOp::kSum);
  group.all_reduce(device, moe::ReduceOp::kSum);
  group.all_gather(device_out, device);
  group.reduce_scatter(host, host_out, moe::ReduceOp::kSum);
  group.broadcast(device, 0);
  group.all_to_all_v(device_out, {1, 1}, device, {1, 1});
  group.all_to_all_v(host_out, {0, 0}, moe::Tensor{}, {0, 0});  // nothing to send: the output decides
  group.send_recv(device, 2, moe::Tensor{}, -1);
  group.send_recv(moe::Tensor{}, -1, host, 0);  // a receive only: its buffer decides
  group.send_recv(device, -1, device, -1);      // no peer (a pipeline's end): nothing on either transport
  CHECK(log == std::vector<std::string>{"mpi all_reduce", "nccl all_reduce", "nccl all_gather", "mpi reduce_scatter",
                                        "nccl broadcast", "nccl all_to_all_v", "mpi all_to_all_v", "nccl send_recv",
                                        "mpi send_recv"});
  CHECK_THROWS_WITH(group.all_gather(device_out, host), Catch::Contains("host and device tensors"));
}

TEST_CASE("split splits both transports; barrier waits on both") {
  std::vector<std::string> log;
  moe::HostDeviceCommunicator group(std::make_unique<Recorder>("mpi", &log), std::make_unique<Recorder>("nccl", &log));
  const std::unique_ptr<moe::Communicator> part = group.split(3, 0);
  CHECK(part->size() == 2);
  part->barrier();
  CHECK(log == std::vector<std::string>{"mpi split 3", "nccl split 3", "nccl' barrier", "mpi' barrier"});
}

TEST_CASE("a batch groups the device transport's collectives; host ones run as they come") {
  std::vector<std::string> log;
  moe::HostDeviceCommunicator group(std::make_unique<Recorder>("mpi", &log), std::make_unique<Recorder>("nccl", &log));
  float a[2];
  {
    moe::CollectiveBatch batch(group);
    group.all_reduce(tensor_on(moe::Device::kCuda, a), moe::ReduceOp::kSum);
    group.all_reduce(tensor_on(moe::Device::kCpu, a), moe::ReduceOp::kSum);
  }
  CHECK(log == std::vector<std::string>{"nccl begin_batch", "nccl all_reduce", "mpi all_reduce", "nccl end_batch"});
}

TEST_CASE("the two transports must hold the same ranks") {
  std::vector<std::string> log;
  CHECK_THROWS_WITH(moe::HostDeviceCommunicator(std::make_unique<Recorder>("mpi", &log, 1, 4),
                                                std::make_unique<Recorder>("nccl", &log, 1, 2)),
                    Catch::Contains("same ranks"));
}
