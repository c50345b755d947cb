// One group of ranks over two transports: host tensors over `host` (MPI) and
// device tensors over `device` (NCCL), chosen per call by where the tensors
// live. This is the group a multi-GPU run gives the mesh: the model's
// collectives move device tensors, while the trainer's scalars (loss, grad
// norm, preemption flag) and the checkpoint's bookkeeping stay on the host.
// Both communicators hold the same ranks in the same order; split() splits
// both. Tensors of one call must all live on one side.
#pragma once

#include <memory>

#include "src/parallel/communicator.h"

namespace moe {

class HostDeviceCommunicator final : public Communicator {
 public:
  // `device` may borrow `host` (NcclCommunicator bootstraps over it): it is
  // destroyed first.
  HostDeviceCommunicator(std::unique_ptr<Communicator> host, std::unique_ptr<Communicator> device);
  ~HostDeviceCommunicator() override;

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  void all_reduce(const Tensor& t, ReduceOp op) override;
  void all_gather(const Tensor& out, const Tensor& in) override;
  void reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) override;
  void broadcast(const Tensor& t, int root) override;
  void all_to_all_v(const Tensor& out, const std::vector<int64_t>& recv_rows, const Tensor& in,
                    const std::vector<int64_t>& send_rows) override;
  // Both transports: a device barrier also waits for the device's collectives.
  void barrier() override;
  void send_recv(const Tensor& send, int to, const Tensor& recv, int from) override;
  std::unique_ptr<Communicator> split(int color, int key) override;
  // Batches the device transport (host collectives run as they come).
  void begin_batch() override { device_->begin_batch(); }
  void end_batch() override { device_->end_batch(); }

 private:
  Communicator& side(const char* op, const Tensor& a, const Tensor& b = Tensor{});

  std::unique_ptr<Communicator> host_;
  std::unique_ptr<Communicator> device_;
};

}  // namespace moe
