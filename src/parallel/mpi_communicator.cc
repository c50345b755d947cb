// The MPI backend of Communicator, for host tensors.
#include <mpi.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>

#include "src/core/bf16.h"
#include "src/parallel/communicator.h"

namespace moe {
namespace {

void check(int status, const char* op) {
  if (status != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(status, text, &len);
    throw std::runtime_error(std::string("MPI error in ") + op + ": " + std::string(text, static_cast<size_t>(len)));
  }
}

// bf16 travels as 16-bit words; its reductions are user-defined ops that
// widen each pair of operands to fp32.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b[i]));
}

void bf16_max(void* in, void* inout, int* len, MPI_Datatype*) {
  auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) {
    if (bf16_to_f32(a[i]) > bf16_to_f32(b[i])) b[i] = a[i];
  }
}

MPI_Op bf16_op(ReduceOp op) {
  static MPI_Op sum = MPI_OP_NULL, max = MPI_OP_NULL;
  if (sum == MPI_OP_NULL) {
    check(MPI_Op_create(&bf16_sum, 1, &sum), "MPI_Op_create");
    check(MPI_Op_create(&bf16_max, 1, &max), "MPI_Op_create");
  }
  return op == ReduceOp::kMax ? max : sum;
}

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::kF32: return MPI_FLOAT;
    case DType::kBF16: return MPI_UINT16_T;
    case DType::kI32: return MPI_INT32_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(ReduceOp op, DType t) {
  if (t == DType::kBF16) return bf16_op(op);
  return op == ReduceOp::kMax ? MPI_MAX : MPI_SUM;
}

int as_count(int64_t n, const char* op) {
  if (n < 0 || n > INT32_MAX) throw std::logic_error(std::string(op) + ": element count out of MPI's int range");
  return static_cast<int>(n);
}

// Elements in one dim-0 row (the product of the other dims), valid for 0 rows too.
int64_t row_elements(const Tensor& t) {
  int64_t n = 1;
  for (int i = 1; i < t.ndim; ++i) n *= t.shape[i];
  return n;
}

void require_host(const Tensor& t, const char* op) {
  if (t.data && t.device != Device::kCpu) {
    throw std::logic_error(std::string(op) + ": the MPI communicator takes host tensors (device tensors use NCCL)");
  }
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm) {
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && comm_ != MPI_COMM_WORLD) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce(const Tensor& t, ReduceOp op) override {
    require_host(t, "all_reduce");
    check(MPI_Allreduce(MPI_IN_PLACE, t.data, as_count(t.numel(), "all_reduce"), mpi_type(t.dtype), mpi_op(op, t.dtype),
                        comm_),
          "all_reduce");
    if (op == ReduceOp::kAvg) divide_by_size(t);
  }

  void all_gather(const Tensor& out, const Tensor& in) override {
    require_host(out, "all_gather");
    require_host(in, "all_gather");
    if (out.numel() != in.numel() * size_ || out.dtype != in.dtype) {
      throw std::logic_error("all_gather: out " + out.shape_string() + " must hold size() x in " + in.shape_string());
    }
    check(MPI_Allgather(in.data, as_count(in.numel(), "all_gather"), mpi_type(in.dtype), out.data,
                        as_count(in.numel(), "all_gather"), mpi_type(in.dtype), comm_),
          "all_gather");
  }

  void reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) override {
    require_host(out, "reduce_scatter");
    require_host(in, "reduce_scatter");
    if (in.numel() != out.numel() * size_ || out.dtype != in.dtype) {
      throw std::logic_error("reduce_scatter: in " + in.shape_string() + " must hold size() x out " +
                             out.shape_string());
    }
    check(MPI_Reduce_scatter_block(in.data, out.data, as_count(out.numel(), "reduce_scatter"), mpi_type(in.dtype),
                                   mpi_op(op, in.dtype), comm_),
          "reduce_scatter");
    if (op == ReduceOp::kAvg) divide_by_size(out);
  }

  void broadcast(const Tensor& t, int root) override {
    require_host(t, "broadcast");
    check(MPI_Bcast(t.data, as_count(t.numel(), "broadcast"), mpi_type(t.dtype), root, comm_), "broadcast");
  }

  void all_to_all_v(const Tensor& out, const std::vector<int64_t>& recv_rows, const Tensor& in,
                    const std::vector<int64_t>& send_rows) override {
    require_host(out, "all_to_all_v");
    require_host(in, "all_to_all_v");
    if (recv_rows.size() != static_cast<size_t>(size_) || send_rows.size() != static_cast<size_t>(size_)) {
      throw std::logic_error("all_to_all_v: one count per peer is required");
    }
    const int64_t row = row_elements(in);
    std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
    int64_t s_off = 0, r_off = 0;
    for (int p = 0; p < size_; ++p) {
      sc[p] = as_count(send_rows[p] * row, "all_to_all_v");
      sd[p] = as_count(s_off, "all_to_all_v");
      rc[p] = as_count(recv_rows[p] * row, "all_to_all_v");
      rd[p] = as_count(r_off, "all_to_all_v");
      s_off += send_rows[p] * row;
      r_off += recv_rows[p] * row;
    }
    if (s_off > in.numel() || r_off > out.numel()) {
      throw std::logic_error("all_to_all_v: counts exceed the buffers " + in.shape_string() + " / " +
                             out.shape_string());
    }
    const MPI_Datatype t = mpi_type(in.dtype);
    check(MPI_Alltoallv(in.data, sc.data(), sd.data(), t, out.data, rc.data(), rd.data(), t, comm_), "all_to_all_v");
  }

  void barrier() override { check(MPI_Barrier(comm_), "barrier"); }

  void send_recv(const Tensor& send, int to, const Tensor& recv, int from) override {
    if (to >= 0) require_host(send, "send_recv");
    if (from >= 0) require_host(recv, "send_recv");
    if (to >= 0 && from >= 0 && send.dtype != recv.dtype) throw std::logic_error("send_recv: dtypes differ");
    check_peer(to, "send_recv");
    check_peer(from, "send_recv");
    constexpr int kTag = 7;
    check(MPI_Sendrecv(send.data, to < 0 ? 0 : as_count(send.numel(), "send_recv"), mpi_type(send.dtype),
                       to < 0 ? MPI_PROC_NULL : to, kTag, recv.data, from < 0 ? 0 : as_count(recv.numel(), "send_recv"),
                       mpi_type(recv.dtype), from < 0 ? MPI_PROC_NULL : from, kTag, comm_, MPI_STATUS_IGNORE),
          "send_recv");
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    MPI_Comm sub = MPI_COMM_NULL;
    check(MPI_Comm_split(comm_, color, key, &sub), "split");
    return std::make_unique<MpiCommunicator>(sub);
  }

 private:
  void check_peer(int peer, const char* op) const {
    if (peer < -1 || peer >= size_ || peer == rank_) {
      throw std::logic_error(std::string(op) + ": peer " + std::to_string(peer) + " in a group of " +
                             std::to_string(size_) + " (rank " + std::to_string(rank_) + ")");
    }
  }

  void divide_by_size(const Tensor& t) {
    const float inv = 1.0f / static_cast<float>(size_);
    if (t.dtype == DType::kF32) {
      for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] *= inv;
    } else if (t.dtype == DType::kBF16) {
      auto* h = static_cast<uint16_t*>(t.data);
      for (int64_t i = 0; i < t.numel(); ++i) h[i] = f32_to_bf16(bf16_to_f32(h[i]) * inv);
    } else {
      throw std::logic_error("all_reduce/reduce_scatter: kAvg needs a floating-point tensor");
    }
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

void finalize_mpi() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

}  // namespace

void ensure_mpi_initialized() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return;
  int provided = 0;
  check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  std::atexit(finalize_mpi);
}

void abort_job(int exit_code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, exit_code);
  _exit(exit_code);
}

void abort_job_unless_exited(int seconds, int exit_code, const std::string& message) {
  std::thread([seconds, exit_code, message] {
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    if (!message.empty()) std::fprintf(stderr, "%s\n", message.c_str());
    std::fflush(stderr);
    abort_job(exit_code);
  }).detach();
}

int current_world_rank() {
  int initialized = 0, rank = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

std::unique_ptr<Communicator> mpi_world() { return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD); }

}  // namespace moe
