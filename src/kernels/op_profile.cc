#include "src/kernels/op_profile.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <stdexcept>

#if MOE_TRAIN_HAS_CUDA
#include <cuda_runtime.h>

#include "src/core/cuda_stream.h"
#endif

namespace moe::ops {
namespace {

bool profiling = false;
std::map<std::string, OpTime> totals;  // host ops, and device ops once their events are read

double now_sec() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

void add(const char* op, double ms) {
  OpTime& t = totals[op];
  t.op = op;
  t.calls += 1;
  t.ms += ms;
}

#if MOE_TRAIN_HAS_CUDA
// Event pairs recorded since the last take_op_profile(); the events are kept
// and reused, so a profiled step creates none once warm.
struct Pending {
  const char* op;
  cudaEvent_t start, stop;
};
std::vector<Pending> pending;
size_t used = 0;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("op profile: ") + what + ": " + cudaGetErrorString(e));
}

int record_start(const char* op) {
  if (used == pending.size()) {
    Pending p{op, nullptr, nullptr};
    check(cudaEventCreate(&p.start), "cudaEventCreate");
    check(cudaEventCreate(&p.stop), "cudaEventCreate");
    pending.push_back(p);
  }
  pending[used].op = op;
  check(cudaEventRecord(pending[used].start, cuda::stream()), "cudaEventRecord");
  return static_cast<int>(used++);
}

void record_stop(int slot) {
  check(cudaEventRecord(pending[static_cast<size_t>(slot)].stop, cuda::stream()), "cudaEventRecord");
}

void read_device_events() {
  for (size_t i = 0; i < used; ++i) {
    check(cudaEventSynchronize(pending[i].stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, pending[i].start, pending[i].stop), "cudaEventElapsedTime");
    add(pending[i].op, ms);
  }
  used = 0;
}
#else
int record_start(const char*) { throw std::logic_error("op profile: device op in a build without CUDA"); }
void record_stop(int) {}
void read_device_events() {}
#endif

}  // namespace

void set_op_profiling(bool on) { profiling = on; }

std::vector<OpTime> take_op_profile() {
  read_device_events();
  std::vector<OpTime> out;
  for (auto& [name, t] : totals) out.push_back(t);
  totals.clear();
  std::sort(out.begin(), out.end(), [](const OpTime& a, const OpTime& b) { return a.ms > b.ms; });
  return out;
}

OpTimer::OpTimer(const char* op, bool device) : op_(op), device_(device) {
  if (!profiling) return;
  if (device_) {
    slot_ = record_start(op);
  } else {
    start_ = now_sec();
  }
}

OpTimer::~OpTimer() {
  if (!profiling) return;
  if (device_) {
    if (slot_ >= 0) record_stop(slot_);
  } else {
    add(op_, 1e3 * (now_sec() - start_));
  }
}

}  // namespace moe::ops
