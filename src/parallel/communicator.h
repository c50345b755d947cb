// Communicator: the collectives every parallel layout is built from, with one
// interface and two backends: MPI for host tensors (CPU training, and the
// tests) and NCCL for device tensors (its own file, with the CUDA backend).
//
// Every rank of a group calls the same collectives in the same order, with
// the same shapes, whatever its data — a rank with nothing to send still takes
// part with zero-length counts — so no rank ever waits on a peer that skipped
// a call. Groups are created once, at start-up (split), never lazily.
//
// Buffers: fp32 or bf16 (reductions of bf16 accumulate in fp32 per pair of
// operands, as NCCL does), i32 for counts. Dim 0 is the dimension that
// all_gather concatenates, reduce_scatter splits and all_to_all_v exchanges.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "src/core/tensor.h"

namespace moe {

enum class ReduceOp { kSum, kAvg, kMax };

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In place: t = op over ranks of t.
  virtual void all_reduce(const Tensor& t, ReduceOp op) = 0;
  // out (size() * in.size(0) rows) = the ranks' `in` concatenated in rank order.
  virtual void all_gather(const Tensor& out, const Tensor& in) = 0;
  // in (size() * out.size(0) rows) is reduced over ranks; rank r keeps rows block r.
  virtual void reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) = 0;
  // t = root's t.
  virtual void broadcast(const Tensor& t, int root) = 0;
  // Each rank sends send_rows[p] rows of `in` (consecutive, in peer order) to
  // peer p and receives recv_rows[p] rows from it into `out` (in peer order).
  virtual void all_to_all_v(const Tensor& out, const std::vector<int64_t>& recv_rows, const Tensor& in,
                            const std::vector<int64_t>& send_rows) = 0;
  virtual void barrier() = 0;
  // Point to point: sends `send` to rank `to` and receives `recv` (the same
  // dtype) from rank `from`, both at once; to or from -1 skips that side.
  // Two neighbours that each pair a send to the other with a receive from
  // it never wait on each other, so a pipeline's exchanges cannot deadlock.
  // Unlike the collectives, only the named peers take part.
  virtual void send_recv(const Tensor& send, int to, const Tensor& recv, int from) = 0;

  // A sub-group of the ranks that pass the same color, ordered by key.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  // The collectives called between begin_batch() and end_batch() may be
  // issued together (NCCL: one group, launched as one). So their buffers must
  // not overlap, and nothing may read a result before end_batch(). Backends
  // that cannot batch run each call as it comes. Use CollectiveBatch.
  virtual void begin_batch() {}
  virtual void end_batch() {}
};

// begin_batch() for its lifetime: the per-parameter collectives of an FSDP
// unit or of a gradient reduction go out as one NCCL launch.
class CollectiveBatch {
 public:
  explicit CollectiveBatch(Communicator& group) : group_(group), unwinding_(std::uncaught_exceptions()) {
    group_.begin_batch();
  }
  // Ends the batch; an error ending it is thrown, unless an exception is
  // already unwinding the stack through the batch (that one wins).
  ~CollectiveBatch() noexcept(false) {
    if (std::uncaught_exceptions() > unwinding_) {
      try {
        group_.end_batch();
      } catch (...) {
      }
      return;
    }
    group_.end_batch();
  }
  CollectiveBatch(const CollectiveBatch&) = delete;
  CollectiveBatch& operator=(const CollectiveBatch&) = delete;

 private:
  Communicator& group_;
  int unwinding_;
};

// One value over the group: unchanged in a group of one rank, else reduced as
// fp32 (about 7 digits: enough for logged losses and norms that only clip).
double all_reduce_value(Communicator& group, double value, ReduceOp op);
// Whether any rank of the group passes true (every rank gets the same answer).
bool any_rank(Communicator& group, bool flag);
// Every rank's bytes, in rank order, on every rank: strings of any length
// (metadata as text, for example). Two all_gathers: the lengths, then the
// bytes padded to the longest.
std::vector<std::string> all_gather_bytes(Communicator& group, const std::string& mine);

// Initialises MPI once per process (MPI_THREAD_FUNNELED; a singleton without
// mpirun is one rank) and finalises it at exit.
void ensure_mpi_initialized();

// The world group over MPI. ensure_mpi_initialized() must have run.
std::unique_ptr<Communicator> mpi_world();

// Ends every rank of the job now with exit_code (MPI_Abort once MPI is
// initialised, else this process only). Safe to call from any thread.
[[noreturn]] void abort_job(int exit_code);
// For a rank that is ending with an error its peers may not share: if this
// process has not exited within `seconds` (MPI_Finalize waits for peers that
// are still in a collective), prints `message` (when not empty) to stderr and
// ends every rank with exit_code. A rank whose peers end too exits first.
void abort_job_unless_exited(int seconds, int exit_code, const std::string& message);
// This process's rank in MPI_COMM_WORLD (0 before MPI is initialised).
int current_world_rank();

// A group of one rank (local_communicator.cc): a single process needs no MPI.
std::unique_ptr<Communicator> single_process_world();

}  // namespace moe
