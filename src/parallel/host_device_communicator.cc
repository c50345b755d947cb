#include "src/parallel/host_device_communicator.h"

#include <stdexcept>
#include <string>

namespace moe {

HostDeviceCommunicator::HostDeviceCommunicator(std::unique_ptr<Communicator> host, std::unique_ptr<Communicator> device)
    : host_(std::move(host)), device_(std::move(device)) {
  if (!host_ || !device_ || host_->size() != device_->size() || host_->rank() != device_->rank()) {
    throw std::logic_error("HostDeviceCommunicator: the host and device groups must hold the same ranks");
  }
}

HostDeviceCommunicator::~HostDeviceCommunicator() { device_.reset(); }

Communicator& HostDeviceCommunicator::side(const char* op, const Tensor& a, const Tensor& b) {
  const bool a_device = a.data != nullptr && a.device == Device::kCuda;
  const bool b_device = b.data != nullptr && b.device == Device::kCuda;
  if (b.data != nullptr && a.data != nullptr && a_device != b_device) {
    throw std::logic_error(std::string(op) + ": host and device tensors in one collective");
  }
  return a_device || b_device ? *device_ : *host_;
}

void HostDeviceCommunicator::all_reduce(const Tensor& t, ReduceOp op) { side("all_reduce", t).all_reduce(t, op); }

void HostDeviceCommunicator::all_gather(const Tensor& out, const Tensor& in) {
  side("all_gather", out, in).all_gather(out, in);
}

void HostDeviceCommunicator::reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) {
  side("reduce_scatter", out, in).reduce_scatter(out, in, op);
}

void HostDeviceCommunicator::broadcast(const Tensor& t, int root) { side("broadcast", t).broadcast(t, root); }

void HostDeviceCommunicator::all_to_all_v(const Tensor& out, const std::vector<int64_t>& recv_rows, const Tensor& in,
                                          const std::vector<int64_t>& send_rows) {
  side("all_to_all_v", out, in).all_to_all_v(out, recv_rows, in, send_rows);
}

void HostDeviceCommunicator::send_recv(const Tensor& send, int to, const Tensor& recv, int from) {
  if (to < 0 && from < 0) return;  // no peer: nothing to move on either transport
  // The sides that move decide the transport (the other may be any tensor or none).
  side("send_recv", to >= 0 ? send : Tensor{}, from >= 0 ? recv : Tensor{}).send_recv(send, to, recv, from);
}

void HostDeviceCommunicator::barrier() {
  device_->barrier();
  host_->barrier();
}

std::unique_ptr<Communicator> HostDeviceCommunicator::split(int color, int key) {
  std::unique_ptr<Communicator> host = host_->split(color, key);
  std::unique_ptr<Communicator> device = device_->split(color, key);
  return std::make_unique<HostDeviceCommunicator>(std::move(host), std::move(device));
}

}  // namespace moe
