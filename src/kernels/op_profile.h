// Where a step's time goes, op by op: when profiling is on, every call of an
// op of ops.h is timed (CUDA events around its kernels on the backend's
// stream for device tensors, the wall clock for host ones) and summed by op
// name. Off by default, and then an OpTimer costs one branch. The benchmarks
// turn it on for the per-kernel breakdown of docs/benchmarks.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::ops {

struct OpTime {
  std::string op;
  int64_t calls = 0;
  double ms = 0;
};

void set_op_profiling(bool on);
// The totals since the last call, largest first, and resets them. For device
// ops this waits for the stream (a HOST SYNC), so call it between steps.
std::vector<OpTime> take_op_profile();

// Times its own lifetime as one call of `op` (a string literal).
class OpTimer {
 public:
  OpTimer(const char* op, bool device);
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  const char* op_;
  bool device_;
  int slot_ = -1;     // device: index of the event pair
  double start_ = 0;  // host: seconds
};

}  // namespace moe::ops
