// The CUDA emulator's NCCL (see include/nccl.h).
//
// A communicator is a file mapped by each of its ranks (under /tmp, unlinked
// once every rank has it open): one slot per rank for collectives, one
// mailbox per (sender, receiver) pair for point-to-point. Collectives copy in,
// meet at a barrier (where every rank must be making the same call: name,
// size, type, op, root; a mismatch aborts with both calls named), reduce or
// gather, and meet again. A send waits until the
// receiver has taken its previous message on that pair; a receive waits for
// the message, so only the two ranks of a pair synchronize, as in NCCL.
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "tools/cuda_emu/device_memory.h"
#include "tools/cuda_emu/include/cuda_bf16.h"
#include "tools/cuda_emu/include/nccl.h"
#include "tools/cuda_emu/runtime_internal.h"

namespace {

constexpr int kMaxRanks = 64;
constexpr double kTimeoutSeconds = 300;

struct Mailbox {
  std::atomic<uint64_t> sent;   // messages posted so far
  std::atomic<uint64_t> taken;  // messages received so far
  uint64_t bytes;               // of the latest message
};

// What a rank is about to do: every rank of a collective must agree.
struct Call {
  char name[24];
  uint64_t bytes;
  int type, op, root;
};

struct Header {
  std::atomic<int> arrived;
  std::atomic<int> sense;
  int nranks;
  uint64_t slot_bytes;
  Call calls[kMaxRanks];               // each rank's current collective
  Mailbox mail[kMaxRanks][kMaxRanks];  // [sender][receiver]
};

size_t slot_bytes() {
  const char* env = std::getenv("CUDA_EMU_NCCL_SLOT_MB");
  return static_cast<size_t>(env ? std::atoll(env) : 64) << 20;
}

size_t header_bytes() { return (sizeof(Header) + 4095) / 4096 * 4096; }

size_t mapping_bytes(int nranks, size_t slot) {
  return header_bytes() + static_cast<size_t>(nranks) * slot + static_cast<size_t>(nranks) * nranks * slot;
}

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "cuda_emu: NCCL: %s\n", why.c_str());
  std::abort();
}

// Spins, then sleeps: ranks are often more than cores here.
// Spins briefly, then sleeps: ranks are often more than cores here.
template <typename Ready>
void wait_for(const Ready& ready, const char* what) {
  const auto start = std::chrono::steady_clock::now();
  for (int spins = 0; !ready(); ++spins) {
    if (spins < 100) {
      sched_yield();
    } else {
      usleep(20);
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > kTimeoutSeconds) {
        die(std::string(what) + ": a peer did not arrive within " + std::to_string(kTimeoutSeconds) + " s");
      }
    }
  }
}

// Sleeps in the kernel until *word changes from `seen` (or a second passes).
// The word is in a shared file mapping: a process-shared futex.
void futex_wait(std::atomic<int>* word, int seen) {
  timespec second{1, 0};
  syscall(SYS_futex, reinterpret_cast<int*>(word), FUTEX_WAIT, seen, &second, nullptr, 0);
}

void futex_wake_all(std::atomic<int>* word) {
  syscall(SYS_futex, reinterpret_cast<int*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

size_t type_bytes(ncclDataType_t t) { return t == ncclBfloat16 ? 2 : 4; }

float load(const void* p, size_t i, ncclDataType_t t) {
  if (t == ncclBfloat16) return static_cast<float>(reinterpret_cast<const __nv_bfloat16*>(p)[i]);
  return reinterpret_cast<const float*>(p)[i];
}

void store(void* p, size_t i, ncclDataType_t t, float v) {
  if (t == ncclBfloat16) {
    static_cast<__nv_bfloat16*>(p)[i] = __nv_bfloat16(v);
  } else {
    static_cast<float*>(p)[i] = v;
  }
}

// out[i] = op over ranks r (in rank order) of in(r)[i].
template <typename In>
void reduce(void* out, size_t count, ncclDataType_t t, ncclRedOp_t op, int nranks, const In& in) {
  for (size_t i = 0; i < count; ++i) {
    if (t == ncclInt32) {
      int32_t acc = reinterpret_cast<const int32_t*>(in(0))[i];
      for (int r = 1; r < nranks; ++r) {
        const int32_t v = reinterpret_cast<const int32_t*>(in(r))[i];
        acc = op == ncclMax    ? (v > acc ? v : acc)
              : op == ncclMin  ? (v < acc ? v : acc)
              : op == ncclProd ? acc * v
                               : acc + v;
      }
      if (op == ncclAvg) acc /= nranks;
      static_cast<int32_t*>(out)[i] = acc;
      continue;
    }
    float acc = load(in(0), i, t);
    for (int r = 1; r < nranks; ++r) {
      const float v = load(in(r), i, t);
      acc = op == ncclMax    ? (v > acc ? v : acc)
            : op == ncclMin  ? (v < acc ? v : acc)
            : op == ncclProd ? acc * v
                             : acc + v;
    }
    if (op == ncclAvg) acc /= static_cast<float>(nranks);
    store(out, i, t, acc);
  }
}

}  // namespace

struct ncclComm {
  int rank = 0;
  int nranks = 1;
  Header* header = nullptr;
  unsigned char* base = nullptr;
  size_t bytes = 0;
  int sense = 0;
  std::vector<uint64_t> sent, received;  // per peer
  std::string last_error;

  unsigned char* slot(int r) const { return base + header_bytes() + static_cast<size_t>(r) * header->slot_bytes; }
  unsigned char* mailbox(int from, int to) const {
    return base + header_bytes() + static_cast<size_t>(nranks) * header->slot_bytes +
           (static_cast<size_t>(from) * nranks + to) * header->slot_bytes;
  }

  // Posts this rank's call and meets the others; all must have posted the
  // same call (the mismatch NCCL itself would hang on or corrupt data with).
  void meet(const char* name, uint64_t bytes, ncclDataType_t type, ncclRedOp_t op, int root) {
    Call& mine = header->calls[rank];
    std::snprintf(mine.name, sizeof mine.name, "%s", name);
    mine.bytes = bytes;
    mine.type = type;
    mine.op = op;
    mine.root = root;
    barrier(name);
    for (int r = 0; r < nranks; ++r) {
      const Call& other = header->calls[r];
      if (std::strcmp(other.name, mine.name) != 0 || other.bytes != bytes || other.type != type || other.op != op ||
          other.root != root) {
        die("collective mismatch: rank " + std::to_string(rank) + " calls " + name + " (" + std::to_string(bytes) +
            " bytes, type " + std::to_string(type) + ", op " + std::to_string(op) + ", root " + std::to_string(root) +
            ") while rank " + std::to_string(r) + " calls " + other.name + " (" + std::to_string(other.bytes) +
            " bytes, type " + std::to_string(other.type) + ", op " + std::to_string(other.op) + ", root " +
            std::to_string(other.root) + ")");
      }
    }
  }

  // A sense-reversing barrier; the last to arrive flips the sense and wakes
  // the others, who sleep on it (a futex) rather than spin.
  void barrier(const char* what) {
    sense ^= 1;
    const int mine = sense;
    if (header->arrived.fetch_add(1) + 1 == nranks) {
      header->arrived.store(0);
      header->sense.store(mine);
      futex_wake_all(&header->sense);
      return;
    }
    const auto start = std::chrono::steady_clock::now();
    for (int seen = header->sense.load(); seen != mine; seen = header->sense.load()) {
      futex_wait(&header->sense, seen);
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > kTimeoutSeconds) {
        die(std::string(what) + ": a peer did not arrive within " + std::to_string(kTimeoutSeconds) + " s");
      }
    }
  }
};

namespace {

ncclResult_t invalid(ncclComm_t comm, ncclResult_t code, const std::string& why) {
  std::fprintf(stderr, "cuda_emu: NCCL: %s\n", why.c_str());
  if (comm) comm->last_error = why;
  return code;
}

ncclResult_t check_buffer(ncclComm_t comm, const char* call, const void* p, size_t bytes) {
  if (comm == nullptr) return invalid(nullptr, ncclInvalidArgument, std::string(call) + ": null communicator");
  if (bytes > comm->header->slot_bytes) {
    return invalid(comm, ncclInvalidUsage,
                   std::string(call) + ": " + std::to_string(bytes) + " bytes exceed the emulator's slot of " +
                       std::to_string(comm->header->slot_bytes) + " (raise CUDA_EMU_NCCL_SLOT_MB)");
  }
  if (bytes > 0 && !emu::is_device_range(p, bytes)) {
    return invalid(comm, ncclInvalidArgument,
                   std::string(call) + ": buffer is not device memory: " + emu::describe_address(p, bytes));
  }
  return ncclSuccess;
}

// Calls between ncclGroupStart and ncclGroupEnd run when the group closes:
// collectives and sends in call order, then the receives.
struct Group {
  int depth = 0;
  cudaStream_t stream = nullptr;
  std::vector<std::function<void()>> first, receives;
};
thread_local Group group;

ncclResult_t submit(cudaStream_t stream, std::function<void()> work, bool is_receive, const char* what) {
  if (group.depth > 0) {
    group.stream = stream;
    (is_receive ? group.receives : group.first).push_back(std::move(work));
    return ncclSuccess;
  }
  return emu::enqueue(stream, std::move(work), what) == cudaSuccess ? ncclSuccess : ncclUnhandledCudaError;
}

}  // namespace

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
  }
  return "unknown result code";
}

const char* ncclGetLastError(ncclComm_t comm) { return comm ? comm->last_error.c_str() : ""; }

ncclResult_t ncclGetVersion(int* version) {
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::random_device rd;
  std::memset(id->internal, 0, sizeof id->internal);
  std::snprintf(id->internal, sizeof id->internal, "/tmp/cuda_emu_nccl_%d_%08x%08x", static_cast<int>(getpid()), rd(),
                rd());
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* out, int nranks, ncclUniqueId id, int rank) {
  *out = nullptr;
  if (nranks < 1 || nranks > kMaxRanks || rank < 0 || rank >= nranks) {
    return invalid(nullptr, ncclInvalidArgument,
                   "ncclCommInitRank: rank " + std::to_string(rank) + " of " + std::to_string(nranks) +
                       " (the emulator takes 1 to " + std::to_string(kMaxRanks) + " ranks)");
  }
  const std::string path(id.internal, strnlen(id.internal, sizeof id.internal));
  if (path.rfind("/tmp/cuda_emu_nccl_", 0) != 0)
    return invalid(nullptr, ncclInvalidArgument, "ncclCommInitRank: not an emulator id");
  const size_t slot = slot_bytes();
  const size_t bytes = mapping_bytes(nranks, slot);
  int fd = -1;
  if (rank == 0) {
    // Built under another name and renamed, so a peer never maps it half-made.
    const std::string tmp = path + ".tmp";
    fd = open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || ftruncate(fd, static_cast<off_t>(bytes)) != 0) die("cannot create " + tmp);
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) die("cannot map " + tmp);
    auto* h = static_cast<Header*>(p);
    h->nranks = nranks;
    h->slot_bytes = slot;
    munmap(p, bytes);
    if (rename(tmp.c_str(), path.c_str()) != 0) die("cannot rename " + tmp);
  } else {
    wait_for([&] { return (fd = open(path.c_str(), O_RDWR)) >= 0; }, "ncclCommInitRank (waiting for rank 0)");
    struct stat st {};
    if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != bytes) {
      die("ncclCommInitRank: " + path + " has another size: ranks disagree on the rank count or CUDA_EMU_NCCL_SLOT_MB");
    }
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) die("cannot map " + path);
  auto* comm = new ncclComm;
  comm->rank = rank;
  comm->nranks = nranks;
  comm->header = static_cast<Header*>(p);
  comm->base = static_cast<unsigned char*>(p);
  comm->bytes = bytes;
  comm->sent.assign(nranks, 0);
  comm->received.assign(nranks, 0);
  if (comm->header->nranks != nranks) die("ncclCommInitRank: ranks disagree on the rank count");
  comm->barrier("ncclCommInitRank");
  if (rank == 0) unlink(path.c_str());  // every rank has it mapped
  *out = comm;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (comm) munmap(comm->base, comm->bytes);
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) { return ncclCommDestroy(comm); }

ncclResult_t ncclCommGetAsyncError(ncclComm_t, ncclResult_t* async_error) {
  *async_error = ncclSuccess;  // failures abort the process with a message instead
  return ncclSuccess;
}

ncclResult_t ncclGroupStart() {
  ++group.depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (group.depth == 0) return invalid(nullptr, ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  if (--group.depth > 0) return ncclSuccess;
  std::vector<std::function<void()>> work = std::move(group.first);
  for (auto& r : group.receives) work.push_back(std::move(r));
  group.first.clear();
  group.receives.clear();
  if (work.empty()) return ncclSuccess;
  return submit(
      group.stream,
      [work] {
        for (const auto& w : work) w();
      },
      false, "ncclGroupEnd");
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
  const size_t bytes = count * type_bytes(type);
  if (ncclResult_t r = check_buffer(comm, "ncclAllReduce", send, bytes)) return r;
  if (ncclResult_t r = check_buffer(comm, "ncclAllReduce", recv, bytes)) return r;
  return submit(
      stream,
      [=] {
        std::memcpy(comm->slot(comm->rank), send, bytes);
        comm->meet("ncclAllReduce", bytes, type, op, -1);
        reduce(recv, count, type, op, comm->nranks, [&](int r) { return static_cast<const void*>(comm->slot(r)); });
        comm->barrier("ncclAllReduce");
      },
      false, "ncclAllReduce");
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t send_count, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t stream) {
  const size_t bytes = send_count * type_bytes(type);
  if (ncclResult_t r = check_buffer(comm, "ncclAllGather", send, bytes)) return r;
  if (comm && bytes * comm->nranks > 0 && !emu::is_device_range(recv, bytes * comm->nranks)) {
    return invalid(
        comm, ncclInvalidArgument,
        "ncclAllGather: receive buffer is not device memory: " + emu::describe_address(recv, bytes * comm->nranks));
  }
  return submit(
      stream,
      [=] {
        std::memcpy(comm->slot(comm->rank), send, bytes);
        comm->meet("ncclAllGather", bytes, type, ncclSum, -1);
        for (int r = 0; r < comm->nranks; ++r)
          std::memcpy(static_cast<unsigned char*>(recv) + r * bytes, comm->slot(r), bytes);
        comm->barrier("ncclAllGather");
      },
      false, "ncclAllGather");
}

ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t recv_count, ncclDataType_t type, ncclRedOp_t op,
                               ncclComm_t comm, cudaStream_t stream) {
  const size_t bytes = recv_count * type_bytes(type);
  if (ncclResult_t r = check_buffer(comm, "ncclReduceScatter", recv, bytes)) return r;
  if (ncclResult_t r = check_buffer(comm, "ncclReduceScatter", send, bytes * comm->nranks)) return r;
  return submit(
      stream,
      [=] {
        std::memcpy(comm->slot(comm->rank), send, bytes * comm->nranks);
        comm->meet("ncclReduceScatter", bytes, type, op, -1);
        reduce(recv, recv_count, type, op, comm->nranks,
               [&](int r) { return static_cast<const void*>(comm->slot(r) + comm->rank * bytes); });
        comm->barrier("ncclReduceScatter");
      },
      false, "ncclReduceScatter");
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type, int root, ncclComm_t comm,
                           cudaStream_t stream) {
  const size_t bytes = count * type_bytes(type);
  if (ncclResult_t r = check_buffer(comm, "ncclBroadcast", recv, bytes)) return r;
  if (root < 0 || root >= comm->nranks) return invalid(comm, ncclInvalidArgument, "ncclBroadcast: root out of range");
  if (comm->rank == root) {
    if (ncclResult_t r = check_buffer(comm, "ncclBroadcast", send, bytes)) return r;
  }
  return submit(
      stream,
      [=] {
        if (comm->rank == root) std::memcpy(comm->slot(root), send, bytes);
        comm->meet("ncclBroadcast", bytes, type, ncclSum, root);
        std::memcpy(recv, comm->slot(root), bytes);
        comm->barrier("ncclBroadcast");
      },
      false, "ncclBroadcast");
}

ncclResult_t ncclSend(const void* send, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  const size_t bytes = count * type_bytes(type);
  if (ncclResult_t r = check_buffer(comm, "ncclSend", send, bytes)) return r;
  if (peer < 0 || peer >= comm->nranks) return invalid(comm, ncclInvalidArgument, "ncclSend: peer out of range");
  return submit(
      stream,
      [=] {
        Mailbox& box = comm->header->mail[comm->rank][peer];
        const uint64_t seq = comm->sent[peer]++;
        wait_for([&] { return box.taken.load() == seq; },
                 "ncclSend (waiting for the receiver to take the last message)");
        std::memcpy(comm->mailbox(comm->rank, peer), send, bytes);
        box.bytes = bytes;
        box.sent.store(seq + 1);
      },
      false, "ncclSend");
}

ncclResult_t ncclRecv(void* recv, size_t count, ncclDataType_t type, int peer, ncclComm_t comm, cudaStream_t stream) {
  const size_t bytes = count * type_bytes(type);
  if (ncclResult_t r = check_buffer(comm, "ncclRecv", recv, bytes)) return r;
  if (peer < 0 || peer >= comm->nranks) return invalid(comm, ncclInvalidArgument, "ncclRecv: peer out of range");
  return submit(
      stream,
      [=] {
        Mailbox& box = comm->header->mail[peer][comm->rank];
        const uint64_t seq = comm->received[peer]++;
        wait_for([&] { return box.sent.load() == seq + 1; }, "ncclRecv (waiting for the sender)");
        if (box.bytes != bytes) {
          die("ncclRecv from rank " + std::to_string(peer) + ": " + std::to_string(bytes) + " bytes expected, " +
              std::to_string(box.bytes) + " sent");
        }
        std::memcpy(recv, comm->mailbox(peer, comm->rank), bytes);
        box.taken.store(seq + 1);
      },
      true, "ncclRecv");
}
