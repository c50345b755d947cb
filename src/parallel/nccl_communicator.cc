// The NCCL backend of Communicator, for device tensors (see the header).
#include "src/parallel/nccl_communicator.h"

#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>

#include "src/core/cuda_stream.h"

namespace moe {
namespace {

[[noreturn]] void fail_cuda(cudaError_t status, const std::string& what) {
  throw std::runtime_error("CUDA error in " + what + ": " + cudaGetErrorString(status));
}

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) fail_cuda(status, what);
}

// NCCL's code string, plus its last-error text, which names the cause (a
// peer, a transport) where the code alone ("unhandled system error") does not.
[[noreturn]] void fail_nccl(ncclResult_t status, ncclComm_t comm, const std::string& what) {
  std::string msg = "NCCL error in " + what + ": " + ncclGetErrorString(status);
  const char* last = ncclGetLastError(comm);
  if (last && *last) msg += " (" + std::string(last) + ")";
  throw std::runtime_error(msg);
}

// "ncclAllReduce (all_reduce, 4096 bf16 elements)"; built only on failure.
std::string describe(const char* call, const char* op, int64_t count, DType t) {
  return std::string(call) + " (" + op + ", " + std::to_string(count) + " " + dtype_name(t) + " elements)";
}

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::kF32: return ncclFloat32;
    case DType::kBF16: return ncclBfloat16;
    case DType::kI32: return ncclInt32;
  }
  throw std::logic_error("NCCL communicator: unknown dtype");
}

ncclRedOp_t nccl_op(ReduceOp op, DType t, const char* name) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kAvg:
      // NCCL would average integers with truncation; refused as by the MPI backend.
      if (t == DType::kI32) throw std::logic_error(std::string(name) + ": kAvg needs a floating-point tensor");
      return ncclAvg;
  }
  throw std::logic_error(std::string(name) + ": unknown reduce op");
}

void require_device(const Tensor& t, const char* op) {
  if (t.data && t.device != Device::kCuda) {
    throw std::logic_error(std::string(op) + ": the NCCL communicator takes device tensors (host tensors use MPI)");
  }
}

// Elements in one dim-0 row (the product of the other dims), valid for 0 rows too.
int64_t row_elements(const Tensor& t) {
  int64_t n = 1;
  for (int i = 1; i < t.ndim; ++i) n *= t.shape[i];
  return n;
}

size_t count_of(int64_t n) { return static_cast<size_t>(n); }

// A host view of n i32 words, for the bootstrap's host collectives.
Tensor host_words(int32_t* words, int64_t n) { return view_of(words, {n}, DType::kI32); }

// Runs `body` (the calls of one exchange; it returns the first failing
// status and leaves that call's name in *call) inside one NCCL group, closed
// even after a failed call, so this thread is never left inside a group.
template <typename F>
ncclResult_t in_group(const char** call, F&& body) {
  *call = "ncclGroupStart";
  ncclResult_t status = ncclGroupStart();
  if (status != ncclSuccess) return status;
  status = body();
  const ncclResult_t end = ncclGroupEnd();
  if (status == ncclSuccess && end != ncclSuccess) {
    *call = "ncclGroupEnd";
    status = end;
  }
  return status;
}

}  // namespace

NcclCommunicator::NcclCommunicator(Communicator& host) : host_(&host) { bootstrap(); }

NcclCommunicator::NcclCommunicator(std::unique_ptr<Communicator> host)
    : owned_host_(std::move(host)), host_(owned_host_.get()) {
  if (!host_) throw std::logic_error("NcclCommunicator: the host communicator is null");
  bootstrap();
}

NcclCommunicator::~NcclCommunicator() { release(); }

void NcclCommunicator::bootstrap() {
  rank_ = host_->rank();
  size_ = host_->size();
  try {
    // Local set-up first, its outcome agreed over the host group: a rank that
    // cannot start (no GPU, no memory) then makes every rank throw, instead of
    // leaving the others waiting in ncclCommInitRank for it.
    std::string local_error;
    ncclUniqueId id{};
    try {
      stream_ = cuda::stream();  // the backend's: collectives are ordered with the kernels around them
      check_cuda(cudaMalloc(&barrier_word_, sizeof(int32_t)), "cudaMalloc (NCCL barrier word)");
      check_cuda(cudaMemset(barrier_word_, 0, sizeof(int32_t)), "cudaMemset (NCCL barrier word)");
      if (rank_ == 0) {
        const ncclResult_t s = ncclGetUniqueId(&id);
        if (s != ncclSuccess) fail_nccl(s, nullptr, "ncclGetUniqueId (bootstrap)");
      }
    } catch (const std::runtime_error& e) {
      local_error = e.what();
    }
    int32_t failed = local_error.empty() ? 0 : 1;
    host_->all_reduce(host_words(&failed, 1), ReduceOp::kMax);
    if (failed) {
      throw std::runtime_error(local_error.empty() ? "NCCL bootstrap: another rank failed to set up (see its error)"
                                                   : local_error);
    }

    // The id travels over the host group as i32 words.
    static_assert(sizeof(ncclUniqueId) % sizeof(int32_t) == 0, "ncclUniqueId is whole i32 words");
    int32_t words[sizeof(ncclUniqueId) / sizeof(int32_t)];
    std::memcpy(words, &id, sizeof id);
    host_->broadcast(host_words(words, sizeof words / sizeof words[0]), 0);
    std::memcpy(&id, words, sizeof id);

    const ncclResult_t s = ncclCommInitRank(&comm_, size_, id, rank_);
    if (s != ncclSuccess) {
      comm_ = nullptr;
      fail_nccl(s, nullptr, "ncclCommInitRank (rank " + std::to_string(rank_) + " of " + std::to_string(size_) + ")");
    }
  } catch (...) {
    release();
    throw;
  }
}

void NcclCommunicator::release() noexcept {
  if (comm_) {
    // Destroy flushes what is in flight, which waits on the peers. After an
    // error (ours, or one unwinding the stack) they may never come: abort.
    if (failed_ || std::uncaught_exceptions() > 0) {
      ncclCommAbort(comm_);
    } else {
      ncclCommDestroy(comm_);
    }
  }
  if (barrier_word_) cudaFree(barrier_word_);
  comm_ = nullptr;
  barrier_word_ = nullptr;
  stream_ = nullptr;
}

void NcclCommunicator::check(ncclResult_t status, const char* call, const char* op, int64_t count, DType t) {
  if (status == ncclSuccess) return;
  failed_ = true;
  fail_nccl(status, comm_, describe(call, op, count, t));
}

void NcclCommunicator::begin_batch() { check(ncclGroupStart(), "ncclGroupStart", "batch", 0, DType::kF32); }

void NcclCommunicator::end_batch() { check(ncclGroupEnd(), "ncclGroupEnd", "batch", 0, DType::kF32); }

void NcclCommunicator::all_reduce(const Tensor& t, ReduceOp op) {
  require_device(t, "all_reduce");
  check(ncclAllReduce(t.data, t.data, count_of(t.numel()), nccl_type(t.dtype), nccl_op(op, t.dtype, "all_reduce"),
                      comm_, stream_),
        "ncclAllReduce", "all_reduce", t.numel(), t.dtype);
}

void NcclCommunicator::all_gather(const Tensor& out, const Tensor& in) {
  require_device(out, "all_gather");
  require_device(in, "all_gather");
  if (out.numel() != in.numel() * size_ || out.dtype != in.dtype) {
    throw std::logic_error("all_gather: out " + out.shape_string() + " must hold size() x in " + in.shape_string());
  }
  check(ncclAllGather(in.data, out.data, count_of(in.numel()), nccl_type(in.dtype), comm_, stream_), "ncclAllGather",
        "all_gather", in.numel(), in.dtype);
}

void NcclCommunicator::reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) {
  require_device(out, "reduce_scatter");
  require_device(in, "reduce_scatter");
  if (in.numel() != out.numel() * size_ || out.dtype != in.dtype) {
    throw std::logic_error("reduce_scatter: in " + in.shape_string() + " must hold size() x out " + out.shape_string());
  }
  check(ncclReduceScatter(in.data, out.data, count_of(out.numel()), nccl_type(in.dtype),
                          nccl_op(op, in.dtype, "reduce_scatter"), comm_, stream_),
        "ncclReduceScatter", "reduce_scatter", out.numel(), in.dtype);
}

void NcclCommunicator::broadcast(const Tensor& t, int root) {
  require_device(t, "broadcast");
  if (root < 0 || root >= size_) {
    throw std::logic_error("broadcast: root " + std::to_string(root) + " is not a rank of this group of " +
                           std::to_string(size_));
  }
  check(ncclBroadcast(t.data, t.data, count_of(t.numel()), nccl_type(t.dtype), root, comm_, stream_), "ncclBroadcast",
        "broadcast", t.numel(), t.dtype);
}

void NcclCommunicator::all_to_all_v(const Tensor& out, const std::vector<int64_t>& recv_rows, const Tensor& in,
                                    const std::vector<int64_t>& send_rows) {
  require_device(out, "all_to_all_v");
  require_device(in, "all_to_all_v");
  if (recv_rows.size() != static_cast<size_t>(size_) || send_rows.size() != static_cast<size_t>(size_)) {
    throw std::logic_error("all_to_all_v: one count per peer is required");
  }
  if (out.dtype != in.dtype) throw std::logic_error("all_to_all_v: in and out must have one dtype");
  const int64_t row = row_elements(in);
  int64_t sent = 0, received = 0;  // rows
  for (int p = 0; p < size_; ++p) {
    if (send_rows[p] < 0 || recv_rows[p] < 0) throw std::logic_error("all_to_all_v: negative row count");
    sent += send_rows[p];
    received += recv_rows[p];
  }
  if (sent * row > in.numel() || received * row > out.numel()) {
    throw std::logic_error("all_to_all_v: counts exceed the buffers " + in.shape_string() + " / " + out.shape_string());
  }

  const ncclDataType_t type = nccl_type(in.dtype);
  const int64_t row_bytes = row * dtype_bytes(in.dtype);
  auto* src = static_cast<const char*>(in.data);
  auto* dst = static_cast<char*>(out.data);
  const char* call = nullptr;
  const ncclResult_t status = in_group(&call, [&] {
    ncclResult_t st = ncclSuccess;
    int64_t s_off = 0, r_off = 0;  // rows
    for (int p = 0; p < size_ && st == ncclSuccess; ++p) {
      if (send_rows[p] > 0) {
        call = "ncclSend";
        st = ncclSend(src + s_off * row_bytes, count_of(send_rows[p] * row), type, p, comm_, stream_);
      }
      if (st == ncclSuccess && recv_rows[p] > 0) {
        call = "ncclRecv";
        st = ncclRecv(dst + r_off * row_bytes, count_of(recv_rows[p] * row), type, p, comm_, stream_);
      }
      s_off += send_rows[p];
      r_off += recv_rows[p];
    }
    return st;
  });
  if (status != ncclSuccess) {
    failed_ = true;
    fail_nccl(status, comm_,
              std::string(call) + " (all_to_all_v, " + std::to_string(sent * row) + " " + dtype_name(in.dtype) +
                  " elements sent, " + std::to_string(received * row) + " received)");
  }
}

void NcclCommunicator::send_recv(const Tensor& send, int to, const Tensor& recv, int from) {
  if (to >= 0) require_device(send, "send_recv");
  if (from >= 0) require_device(recv, "send_recv");
  for (const int peer : {to, from}) {
    if (peer < -1 || peer >= size_ || peer == rank_) {
      throw std::logic_error("send_recv: peer " + std::to_string(peer) + " in a group of " + std::to_string(size_) +
                             " (rank " + std::to_string(rank_) + ")");
    }
  }
  const char* call = nullptr;
  const ncclResult_t status = in_group(&call, [&] {
    ncclResult_t st = ncclSuccess;
    if (to >= 0 && send.numel() > 0) {
      call = "ncclSend";
      st = ncclSend(send.data, count_of(send.numel()), nccl_type(send.dtype), to, comm_, stream_);
    }
    if (st == ncclSuccess && from >= 0 && recv.numel() > 0) {
      call = "ncclRecv";
      st = ncclRecv(recv.data, count_of(recv.numel()), nccl_type(recv.dtype), from, comm_, stream_);
    }
    return st;
  });
  if (status != ncclSuccess) {
    failed_ = true;
    fail_nccl(status, comm_,
              std::string(call) + " (send_recv, " + std::to_string(to >= 0 ? send.numel() : 0) + " elements to " +
                  std::to_string(to) + ", " + std::to_string(from >= 0 ? recv.numel() : 0) + " from " +
                  std::to_string(from) + ")");
  }
}

void NcclCommunicator::barrier() {
  check(ncclAllReduce(barrier_word_, barrier_word_, 1, ncclInt32, ncclSum, comm_, stream_), "ncclAllReduce", "barrier",
        1, DType::kI32);
  const cudaError_t synced = cudaStreamSynchronize(stream_);
  if (synced != cudaSuccess) {
    failed_ = true;
    fail_cuda(synced, "cudaStreamSynchronize (barrier, 1 i32 element)");
  }
  ncclResult_t async = ncclSuccess;
  check(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError", "barrier", 1, DType::kI32);
  if (async != ncclSuccess) {
    failed_ = true;
    fail_nccl(async, comm_, "barrier: an earlier collective of this group (reported asynchronously)");
  }
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::split_nccl(int color, int key) {
  return std::make_unique<NcclCommunicator>(host_->split(color, key));
}

std::unique_ptr<NcclCommunicator> nccl_world(Communicator& host_world) {
  return std::make_unique<NcclCommunicator>(host_world);
}

}  // namespace moe
