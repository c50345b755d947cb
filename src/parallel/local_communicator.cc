// The one-rank Communicator: what a single process uses for every group, so
// the model and the trainer run the same code whatever the layout, and a plain
// process never needs MPI. Every collective over one rank is a copy (or nothing).
#include <stdexcept>

#include "src/core/tensor_pool.h"
#include "src/parallel/communicator.h"

namespace moe {
namespace {

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }

  void all_reduce(const Tensor&, ReduceOp) override {}
  void all_gather(const Tensor& out, const Tensor& in) override { copy_same_size(out, in, "all_gather"); }
  void reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp) override {
    copy_same_size(out, in, "reduce_scatter");
  }
  void broadcast(const Tensor&, int root) override {
    if (root != 0) throw std::logic_error("broadcast: root " + std::to_string(root) + " in a group of one rank");
  }
  void all_to_all_v(const Tensor& out, const std::vector<int64_t>& recv_rows, const Tensor& in,
                    const std::vector<int64_t>& send_rows) override {
    if (recv_rows.size() != 1 || send_rows.size() != 1 || recv_rows[0] != send_rows[0]) {
      throw std::logic_error("all_to_all_v: a group of one rank receives exactly what it sends");
    }
    if (send_rows[0] > 0) copy_tensor(out.rows(0, recv_rows[0]), in.rows(0, send_rows[0]));
  }
  void barrier() override {}
  void send_recv(const Tensor&, int to, const Tensor&, int from) override {
    if (to != -1 || from != -1) {
      throw std::logic_error("send_recv: peers " + std::to_string(to) + " and " + std::to_string(from) +
                             " in a group of one rank");
    }
  }
  std::unique_ptr<Communicator> split(int, int) override { return std::make_unique<LocalCommunicator>(); }

 private:
  static void copy_same_size(const Tensor& out, const Tensor& in, const char* op) {
    if (out.numel() != in.numel() || out.dtype != in.dtype) {
      throw std::logic_error(std::string(op) + ": out " + out.shape_string() + " and in " + in.shape_string() +
                             " must match in a group of one rank");
    }
    if (out.data != in.data) copy_tensor(out, in);
  }
};

}  // namespace

std::unique_ptr<Communicator> single_process_world() { return std::make_unique<LocalCommunicator>(); }

}  // namespace moe
