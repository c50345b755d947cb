#include "src/parallel/collective_timeout.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;

// The one collective in flight on this rank (training issues them from one
// thread, one at a time): its start time (0 = none) and what it is.
std::atomic<int64_t> started_ns{0};
std::atomic<const char*> op_name{""};
std::atomic<const std::string*> group_name{nullptr};
std::atomic<double> limit_s{0};

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

void watch() {
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const int64_t t0 = started_ns.load();
    const double limit = limit_s.load();
    if (t0 == 0 || limit <= 0) continue;
    const double waited = static_cast<double>(now_ns() - t0) * 1e-9;
    if (waited < limit) continue;
    const std::string* group = group_name.load();
    std::fprintf(stderr,
                 "moe_train: error: rank %d: %s %s did not finish within %.0f s (distributed.nccl_timeout_sec): a "
                 "peer has died, is stuck, or called a different collective; aborting the job\n",
                 current_world_rank(), group ? group->c_str() : "?", op_name.load(), limit);
    std::fflush(stderr);
    abort_job(kCollectiveTimeoutExitCode);
  }
}

void start_watchdog() {
  static std::once_flag once;
  std::call_once(once, [] { std::thread(watch).detach(); });
}

class TimedCommunicator final : public Communicator {
 public:
  TimedCommunicator(std::unique_ptr<Communicator> inner, double timeout_s, std::string group)
      : inner_(std::move(inner)), timeout_s_(timeout_s), group_(std::move(group)) {
    start_watchdog();
  }

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }

  void all_reduce(const Tensor& t, ReduceOp op) override {
    Timed timed(*this, "all_reduce");
    inner_->all_reduce(t, op);
  }
  void all_gather(const Tensor& out, const Tensor& in) override {
    Timed timed(*this, "all_gather");
    inner_->all_gather(out, in);
  }
  void reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) override {
    Timed timed(*this, "reduce_scatter");
    inner_->reduce_scatter(out, in, op);
  }
  void broadcast(const Tensor& t, int root) override {
    Timed timed(*this, "broadcast");
    inner_->broadcast(t, root);
  }
  void all_to_all_v(const Tensor& out, const std::vector<int64_t>& recv_rows, const Tensor& in,
                    const std::vector<int64_t>& send_rows) override {
    Timed timed(*this, "all_to_all_v");
    inner_->all_to_all_v(out, recv_rows, in, send_rows);
  }
  void barrier() override {
    Timed timed(*this, "barrier");
    inner_->barrier();
  }
  void send_recv(const Tensor& send, int to, const Tensor& recv, int from) override {
    Timed timed(*this, "send_recv");
    inner_->send_recv(send, to, recv, from);
  }
  void begin_batch() override { inner_->begin_batch(); }
  void end_batch() override {
    Timed timed(*this, "batch");  // a batched collective may block here
    inner_->end_batch();
  }
  std::unique_ptr<Communicator> split(int color, int key) override {
    std::unique_ptr<Communicator> sub;
    {
      Timed timed(*this, "split");
      sub = inner_->split(color, key);
    }
    return std::make_unique<TimedCommunicator>(std::move(sub), timeout_s_, group_ + "/split");
  }

 private:
  // Marks a collective in flight for the watchdog while it lives.
  struct Timed {
    Timed(const TimedCommunicator& c, const char* op) {
      op_name.store(op);
      group_name.store(&c.group_);
      limit_s.store(c.timeout_s_);
      started_ns.store(now_ns());
    }
    ~Timed() { started_ns.store(0); }
  };

  std::unique_ptr<Communicator> inner_;
  double timeout_s_;
  std::string group_;
};

}  // namespace

std::unique_ptr<Communicator> with_collective_timeout(std::unique_ptr<Communicator> inner, double timeout_s,
                                                      const std::string& group) {
  return std::make_unique<TimedCommunicator>(std::move(inner), timeout_s, group);
}

}  // namespace moe
