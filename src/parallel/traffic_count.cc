#include "src/parallel/traffic_count.h"

#include <numeric>

namespace moe {
namespace {

class TrafficCount : public Communicator {
 public:
  TrafficCount(std::unique_ptr<Communicator> inner, GroupTraffic* counts) : inner_(std::move(inner)), c_(*counts) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  void all_reduce(const Tensor& t, ReduceOp op) override {
    add(c_.all_reduce, t.bytes());
    inner_->all_reduce(t, op);
  }
  void all_gather(const Tensor& out, const Tensor& in) override {
    add(c_.all_gather, out.bytes());
    inner_->all_gather(out, in);
  }
  void reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) override {
    add(c_.reduce_scatter, in.bytes());
    inner_->reduce_scatter(out, in, op);
  }
  void broadcast(const Tensor& t, int root) override {
    add(c_.broadcast, t.bytes());
    inner_->broadcast(t, root);
  }
  void all_to_all_v(const Tensor& out, const std::vector<int64_t>& recv_rows, const Tensor& in,
                    const std::vector<int64_t>& send_rows) override {
    const int64_t rows = std::accumulate(send_rows.begin(), send_rows.end(), int64_t{0});
    const int64_t row_bytes = in.shape[0] > 0 ? in.bytes() / in.shape[0] : 0;
    add(c_.all_to_all, rows * row_bytes);
    inner_->all_to_all_v(out, recv_rows, in, send_rows);
  }
  void barrier() override { inner_->barrier(); }
  void send_recv(const Tensor& send, int to, const Tensor& recv, int from) override {
    if (to >= 0) add(c_.send, send.bytes());
    inner_->send_recv(send, to, recv, from);
  }
  void begin_batch() override { inner_->begin_batch(); }
  void end_batch() override { inner_->end_batch(); }
  std::unique_ptr<Communicator> split(int color, int key) override { return inner_->split(color, key); }

 private:
  // A group of one rank moves nothing.
  void add(CollectiveTraffic& t, int64_t bytes) const {
    if (inner_->size() == 1) return;
    t.calls += 1;
    t.bytes += bytes;
  }
  std::unique_ptr<Communicator> inner_;
  GroupTraffic& c_;
};

}  // namespace

std::unique_ptr<Communicator> with_traffic_count(std::unique_ptr<Communicator> inner, GroupTraffic* counts) {
  return std::make_unique<TrafficCount>(std::move(inner), counts);
}

}  // namespace moe
