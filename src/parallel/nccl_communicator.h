// The NCCL backend of Communicator, for device (CUDA) tensors: fp32, bf16 and
// i32 on Device::kCuda (host tensors are refused; they use the MPI backend).
// It exists only where the CUDA toolkit was found: code that must also build
// CPU-only includes this header behind `#if MOE_TRAIN_HAS_CUDA`.
//
// Bootstrap: an NCCL group is built from a host Communicator of the same ranks
// (the MPI one): rank 0 makes the NCCL id, the host group broadcasts it, every
// rank joins. The constructor is therefore collective over the host group.
//
// GPU: NCCL binds a group to the device that is current when it is built, so
// the caller chooses it first, one GPU per rank — cudaSetDevice(local rank),
// LaunchEnv::local_rank — and NCCL refuses two ranks of one group on one GPU.
// split() binds its groups to the then-current device, normally the same.
//
// Streams: each collective is only enqueued (barrier() alone waits), on the
// backend's one stream (src/core/cuda_stream.h), where every kernel runs: a
// collective is ordered after the kernels that produce its input and before
// those that read its output, with no events. (Overlapping communication
// with compute would take a second stream and events; not done yet.) A host
// read of a result is the caller's to order (download() does).
//
// kAvg uses ncclAvg, which for floats may scale each operand by 1/size()
// before summing: equal to the MPI backend's sum-then-divide up to round-off.
// Errors: NCCL and CUDA failures throw std::runtime_error naming the NCCL call,
// the collective and its element count; misuse throws std::logic_error.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>

#include "src/parallel/communicator.h"

namespace moe {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `host`'s ranks, which become this group's ranks in the
  // same order. `host` must outlive this communicator: split() splits it.
  explicit NcclCommunicator(Communicator& host);
  // The same, owning its host group (what split() builds).
  explicit NcclCommunicator(std::unique_ptr<Communicator> host);
  // ncclCommDestroy; never throws. Destroy before main returns, while the
  // CUDA runtime is still up.
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce(const Tensor& t, ReduceOp op) override;
  void all_gather(const Tensor& out, const Tensor& in) override;
  void reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) override;
  void broadcast(const Tensor& t, int root) override;
  // Point-to-point pairs in one NCCL group; a pair whose count is zero is
  // skipped on both sides (the counts agree), so idle peers cost nothing.
  void all_to_all_v(const Tensor& out, const std::vector<int64_t>& recv_rows, const Tensor& in,
                    const std::vector<int64_t>& send_rows) override;
  // A one-element all-reduce, then waits for stream() and reports any
  // asynchronous NCCL error (a peer that failed).
  void barrier() override;
  void send_recv(const Tensor& send, int to, const Tensor& recv, int from) override;
  // ncclGroupStart / ncclGroupEnd (nestable).
  void begin_batch() override;
  void end_batch() override;

  // Splits the host group and bootstraps NCCL on each part (collective over
  // this group). split() returns the same as a Communicator.
  std::unique_ptr<NcclCommunicator> split_nccl(int color, int key);
  std::unique_ptr<Communicator> split(int color, int key) override { return split_nccl(color, key); }

  // The stream every collective of this group runs on.
  cudaStream_t stream() const { return stream_; }

 private:
  void bootstrap();
  void release() noexcept;
  // Throws std::runtime_error naming the NCCL call, the collective and its count.
  void check(ncclResult_t status, const char* call, const char* op, int64_t count, DType t);

  std::unique_ptr<Communicator> owned_host_;  // set when built by split()
  Communicator* host_;
  int rank_ = 0, size_ = 1;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* barrier_word_ = nullptr;  // one device i32 for barrier()
  bool failed_ = false;           // an NCCL call failed: abort, not destroy
};

// The NCCL group of every rank of `host_world` (mpi_world()), which must
// outlive it. Call cudaSetDevice(local rank) first.
std::unique_ptr<NcclCommunicator> nccl_world(Communicator& host_world);

}  // namespace moe
