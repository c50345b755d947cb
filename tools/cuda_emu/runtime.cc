// The CUDA emulator's runtime: errors, devices, memory, streams, events, graphs
// and kernel launches. Streams execute their work when it is enqueued (one
// host thread, in order), except while a stream is being captured: then the
// work is recorded into the graph, and runs each time the graph is launched.
#include <sys/mman.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "src/kernels/cuda/launch_limits.h"
#include "tools/cuda_emu/device_memory.h"
#include "tools/cuda_emu/fibers.h"
#include "tools/cuda_emu/kernel_symbols.h"
#include "tools/cuda_emu/include/cuda_runtime.h"
#include "tools/cuda_emu/runtime_internal.h"

struct CUstream_st {
  unsigned flags = 0;
  bool capturing = false;
  bool invalidated = false;
  std::vector<std::function<void()>> captured;
};

struct CUevent_st {
  unsigned flags = 0;
  bool recorded = false;
  double ms = 0;
};

struct CUgraph_st {
  std::vector<std::function<void()>> nodes;
};

struct CUgraphExec_st {
  std::vector<std::function<void()>> nodes;
};

namespace emu {
namespace {

thread_local cudaError_t last_error = cudaSuccess;
// A kernel that deadlocked leaves the context unusable, as a device fault does.
cudaError_t fatal_error = cudaSuccess;
int current_device = 0;
// per (device, kernel), from cudaFuncSetAttribute: the attribute belongs to a
// device's context, so raising it on one GPU leaves the others at the default.
std::map<std::pair<int, const void*>, int> max_dynamic_shared;

// The stream whose capture this host thread began (capture modes Global and
// ThreadLocal forbid this thread's unsafe calls while it lasts).
thread_local CUstream_st* capturing_stream = nullptr;

constexpr size_t kDefaultSharedLimit = 48 * 1024;
constexpr int kOptinSharedLimit = 163 * 1024;  // sm_80's, the stricter of the two built

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

cudaError_t fail(cudaError_t e, const std::string& why) {
  std::fprintf(stderr, "cuda_emu: %s: %s\n", cudaGetErrorName(e), why.c_str());
  last_error = e;
  return e;
}

// Calls that wait for or allocate on the device may not run while this thread
// captures: they invalidate the capture, as the CUDA runtime does.
cudaError_t refuse_during_capture(const char* call) {
  if (capturing_stream == nullptr) return cudaSuccess;
  capturing_stream->invalidated = true;
  return fail(cudaErrorStreamCaptureUnsupported,
              std::string(call) + " while this thread captures a stream: not allowed in a CUDA graph capture");
}

int devices() {
  const char* env = std::getenv("CUDA_EMU_DEVICE_COUNT");
  return env ? std::atoi(env) : 8;
}

}  // namespace

int compute_capability() {
  const char* env = std::getenv("CUDA_EMU_COMPUTE_CAPABILITY");
  return env ? std::atoi(env) : 80;
}

cudaError_t enqueue(CUstream_st* stream, std::function<void()> work, const char* what) {
  if (fatal_error != cudaSuccess) return fatal_error;
  if (stream == nullptr && capturing_stream != nullptr) {
    capturing_stream->invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported,
                std::string(what) + " on the legacy default stream while a capture is active");
  }
  if (stream != nullptr && stream->capturing) {
    stream->captured.push_back(std::move(work));
    return cudaSuccess;
  }
  DeviceAccess access;
  work();
  return fatal_error;
}

}  // namespace emu

using emu::fail;

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}

cudaError_t cudaGetLastError() {
  if (emu::fatal_error != cudaSuccess) return emu::fatal_error;
  const cudaError_t e = emu::last_error;
  emu::last_error = cudaSuccess;
  return e;
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = emu::devices();
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  *device = emu::current_device;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= emu::devices())
    return fail(cudaErrorInvalidDevice, "cudaSetDevice(" + std::to_string(device) + ")");
  emu::current_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (device < 0 || device >= emu::devices()) return fail(cudaErrorInvalidDevice, "cudaGetDeviceProperties");
  *p = cudaDeviceProp{};
  const int cc = emu::compute_capability();
  std::snprintf(p->name, sizeof p->name, "cuda_emu (CPU emulation of an sm_%d GPU)", cc);
  p->totalGlobalMem = emu::kDeviceBytes;
  p->sharedMemPerBlock = emu::kDefaultSharedLimit;
  p->sharedMemPerBlockOptin = emu::kOptinSharedLimit;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->major = cc / 10;
  p->minor = cc % 10;
  p->multiProcessorCount = 108;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  if (attr != cudaDevAttrMaxSharedMemoryPerBlockOptin) return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute");
  *value = emu::kOptinSharedLimit;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  if (cudaError_t e = emu::refuse_during_capture("cudaDeviceSynchronize")) return e;
  return emu::fatal_error;
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (cudaError_t e = emu::refuse_during_capture("cudaMalloc")) return e;
  *ptr = emu::device_alloc(bytes);
  if (*ptr == nullptr) {
    emu::last_error = cudaErrorMemoryAllocation;
    return cudaErrorMemoryAllocation;
  }
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  if (cudaError_t e = emu::refuse_during_capture("cudaFree")) return e;
  if (!emu::device_free(ptr))
    return fail(cudaErrorInvalidDevicePointer, "cudaFree of " + emu::describe_address(ptr, 0));
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  *ptr = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
  return *ptr ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFreeHost(void* ptr) {
  std::free(ptr);
  return cudaSuccess;
}

namespace {

// The kind must match where the pointers are, and device ranges must lie
// inside live allocations (a real copy past the end faults or corrupts).
cudaError_t check_copy(const char* call, void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  const bool dst_dev = emu::is_device_address(dst), src_dev = emu::is_device_address(src);
  bool ok = true;
  switch (kind) {
    case cudaMemcpyHostToHost: ok = !dst_dev && !src_dev; break;
    case cudaMemcpyHostToDevice: ok = dst_dev && !src_dev; break;
    case cudaMemcpyDeviceToHost: ok = !dst_dev && src_dev; break;
    case cudaMemcpyDeviceToDevice: ok = dst_dev && src_dev; break;
    case cudaMemcpyDefault: break;
  }
  if (!ok) {
    return fail(cudaErrorInvalidValue, std::string(call) + ": kind " + std::to_string(kind) + " does not match dst " +
                                           emu::describe_address(dst, bytes) + ", src " +
                                           emu::describe_address(src, bytes));
  }
  if ((dst_dev && !emu::is_device_range(dst, bytes)) || (src_dev && !emu::is_device_range(src, bytes))) {
    return fail(cudaErrorInvalidValue, std::string(call) + " past the end of an allocation: dst " +
                                           emu::describe_address(dst, bytes) + ", src " +
                                           emu::describe_address(src, bytes));
  }
  return cudaSuccess;
}

cudaError_t check_set(const char* call, void* ptr, size_t bytes) {
  if (!emu::is_device_range(ptr, bytes)) {
    return fail(cudaErrorInvalidValue,
                std::string(call) + " outside device memory: " + emu::describe_address(ptr, bytes));
  }
  return cudaSuccess;
}

}  // namespace

namespace {

// The synchronous calls are the asynchronous ones on the legacy stream, which
// a capture forbids (and the emulator's streams are synchronous anyway).
cudaError_t copy(const char* call, void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  if (cudaError_t e = check_copy(call, dst, src, bytes, kind)) return e;
  return emu::enqueue(
      stream, [=] { std::memmove(dst, src, bytes); }, call);
}

cudaError_t set(const char* call, void* ptr, int value, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  if (cudaError_t e = check_set(call, ptr, bytes)) return e;
  return emu::enqueue(
      stream, [=] { std::memset(ptr, value, bytes); }, call);
}

}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (cudaError_t e = emu::refuse_during_capture("cudaMemcpy")) return e;
  return copy("cudaMemcpy", dst, src, bytes, kind, nullptr);
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  return copy("cudaMemcpyAsync", dst, src, bytes, kind, stream);
}

cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  if (cudaError_t e = emu::refuse_during_capture("cudaMemset")) return e;
  return set("cudaMemset", ptr, value, bytes, nullptr);
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream) {
  return set("cudaMemsetAsync", ptr, value, bytes, stream);
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  *stream = new CUstream_st;
  (*stream)->flags = flags;
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) {
  if (cudaError_t e = emu::refuse_during_capture("cudaStreamSynchronize")) return e;
  return emu::fatal_error;
}

cudaError_t cudaStreamQuery(cudaStream_t) {
  if (cudaError_t e = emu::refuse_during_capture("cudaStreamQuery")) return e;
  return emu::fatal_error;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
  *event = new CUevent_st;
  (*event)->flags = flags;
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  return emu::enqueue(
      stream,
      [event] {
        event->recorded = true;
        event->ms = emu::now_ms();
      },
      "cudaEventRecord");
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (cudaError_t e = emu::refuse_during_capture("cudaEventSynchronize")) return e;
  (void)event;
  return emu::fatal_error;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t stop) {
  if ((start->flags | stop->flags) & cudaEventDisableTiming) {
    return fail(cudaErrorInvalidValue, "cudaEventElapsedTime on an event created with cudaEventDisableTiming");
  }
  if (!start->recorded || !stop->recorded)
    return fail(cudaErrorInvalidValue, "cudaEventElapsedTime: event never recorded");
  *ms = static_cast<float>(stop->ms - start->ms);
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  if (stream == nullptr) return fail(cudaErrorStreamCaptureUnsupported, "capture of the legacy default stream");
  if (stream->capturing) return fail(cudaErrorInvalidValue, "cudaStreamBeginCapture: the stream already captures");
  stream->capturing = true;
  stream->invalidated = false;
  stream->captured.clear();
  if (mode != cudaStreamCaptureModeRelaxed) emu::capturing_stream = stream;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  *graph = nullptr;
  if (stream == nullptr || !stream->capturing)
    return fail(cudaErrorInvalidValue, "cudaStreamEndCapture without a capture");
  stream->capturing = false;
  if (emu::capturing_stream == stream) emu::capturing_stream = nullptr;
  if (stream->invalidated) {
    stream->captured.clear();
    return fail(cudaErrorStreamCaptureInvalidated, "the capture was invalidated by an earlier call (see above)");
  }
  *graph = new CUgraph_st{std::move(stream->captured)};
  stream->captured.clear();
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  *exec = new CUgraphExec_st{graph->nodes};
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  const std::vector<std::function<void()>>* nodes = &exec->nodes;
  return emu::enqueue(
      stream,
      [nodes] {
        for (const auto& node : *nodes) node();
      },
      "cudaGraphLaunch");
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* version) {
  *version = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > emu::kOptinSharedLimit) {
    return fail(cudaErrorInvalidValue, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize, " + std::to_string(value) +
                                           "): the limit is " + std::to_string(emu::kOptinSharedLimit));
  }
  emu::max_dynamic_shared[{emu::current_device, func}] = value;
  return cudaSuccess;
}

namespace emu {
namespace {

// `bytes` of memory whose end is the start of a PROT_NONE page (the start is
// 16-byte aligned, as CUDA aligns dynamic shared memory).
class GuardedBuffer {
 public:
  explicit GuardedBuffer(size_t bytes) {
    if (bytes == 0) return;  // no dynamic shared memory: nothing to map
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t rounded = (bytes + 15) / 16 * 16;
    mapped_ = (rounded + page - 1) / page * page + page;
    void* p = mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      std::fprintf(stderr, "cuda_emu: cannot map %zu bytes of shared memory\n", bytes);
      std::abort();
    }
    base_ = static_cast<unsigned char*>(p);
    mprotect(base_ + mapped_ - page, page, PROT_NONE);
    data_ = base_ + mapped_ - page - rounded;
  }
  ~GuardedBuffer() {
    if (base_ != nullptr) munmap(base_, mapped_);
  }
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;
  unsigned char* data() const { return data_; }

 private:
  unsigned char* base_ = nullptr;
  unsigned char* data_ = nullptr;
  size_t mapped_ = 0;
};

}  // namespace

// The launch against the per-block limits of every GPU the kernels are built
// for (src/kernels/cuda/launch_limits.h), with the kernel's registers and static
// shared memory from the table the build recorded: what the driver would
// refuse on a real A100 or H100. A kernel from a file the table does not know
// (a test's own kernel) is not checked; one missing from a file it knows
// means the table is out of date.
// CUDA_EMU_FAULT=NAME: every launch of a kernel whose name contains NAME
// skips its first block, so that part of its output is never written: a
// wrong result for the tests of the checks that must catch one (check-gpu).
static bool injects_fault(const LaunchShape& s) {
  static const char* const name = std::getenv("CUDA_EMU_FAULT");
  if (name == nullptr || *name == '\0') return false;
  return moe::launch_limits::demangle(kernel_symbol(s.kernel)).find(name) != std::string::npos ||
         std::string(s.name).find(name) != std::string::npos;
}

static std::string resource_violation(const LaunchShape& s, uint64_t threads, const std::string& site) {
  namespace limits = moe::launch_limits;
  if (!limits::has_source(s.file)) return "";
  const std::string kernel = limits::demangle(kernel_symbol(s.kernel));
  for (const limits::GpuLimits& gpu : limits::checked_gpus()) {
    const limits::KernelResources* k = limits::find(gpu.arch, kernel);
    if (k == nullptr) {
      return "launch of " + site + ": " + (kernel.empty() ? "(no symbol)" : kernel) + " has no " + gpu.arch +
             " row in the launch-resource table of " + s.file + "; rebuild, or check nvcc_compile.sh's parsing";
    }
    const std::string why =
        limits::launch_violation(*k, gpu, static_cast<int64_t>(threads), static_cast<int64_t>(s.shared_bytes));
    if (!why.empty()) return why + " (" + s.file + ":" + std::to_string(s.line) + ")";
  }
  return "";
}

void launch_grid(const LaunchShape& s, std::function<void()> thread_main) {
  const std::string site = std::string(s.name) + " (" + s.file + ":" + std::to_string(s.line) + ")";
  const uint64_t threads = uint64_t{s.block.x} * s.block.y * s.block.z;
  if (threads == 0 || threads > 1024 || s.block.z > 64 || s.grid.x == 0 || s.grid.y == 0 || s.grid.z == 0 ||
      s.grid.x > 2147483647u || s.grid.y > 65535 || s.grid.z > 65535) {
    fail(cudaErrorInvalidConfiguration, "launch of " + site + ": grid (" + std::to_string(s.grid.x) + ", " +
                                            std::to_string(s.grid.y) + ", " + std::to_string(s.grid.z) + "), block (" +
                                            std::to_string(s.block.x) + ", " + std::to_string(s.block.y) + ", " +
                                            std::to_string(s.block.z) + ")");
    return;
  }
  const auto raised = max_dynamic_shared.find({current_device, s.kernel});
  const size_t limit = raised == max_dynamic_shared.end() ? kDefaultSharedLimit : static_cast<size_t>(raised->second);
  if (s.shared_bytes > limit) {
    fail(cudaErrorInvalidValue,
         "launch of " + site + " with " + std::to_string(s.shared_bytes) +
             " bytes of dynamic shared memory; the kernel's limit is " + std::to_string(limit) +
             (raised == max_dynamic_shared.end() ? " (raise it with cudaFuncSetAttribute(MaxDynamicSharedMemorySize))"
                                                 : ""));
    return;
  }
  if (const std::string why = resource_violation(s, threads, site); !why.empty()) {
    fail(cudaErrorLaunchOutOfResources, why);
    return;
  }
  const LaunchShape shape = s;
  const bool faulty = injects_fault(s);
  enqueue(
      s.stream,
      [shape, site, faulty, body = std::move(thread_main)] {
        // Dynamic shared memory starts as all-ones bytes (NaN as floats, -1 as
        // integers), so a read before any write shows in the results, and it
        // ends at an inaccessible page, so an access past its end faults.
        GuardedBuffer shared(shape.shared_bytes);
        for (unsigned z = 0; z < shape.grid.z; ++z)
          for (unsigned y = 0; y < shape.grid.y; ++y)
            for (unsigned x = 0; x < shape.grid.x; ++x) {
              if (faulty && x == 0 && y == 0 && z == 0) continue;  // CUDA_EMU_FAULT: block 0 never runs
              if (shape.shared_bytes > 0) std::memset(shared.data(), 0xFF, shape.shared_bytes);
              const std::string error = run_block(dim3(x, y, z), shape.grid, shape.block, shared.data(), body);
              if (!error.empty()) {
                fatal_error = cudaErrorLaunchFailure;
                std::fprintf(stderr, "cuda_emu: kernel %s, block (%u, %u, %u): %s\n", site.c_str(), x, y, z,
                             error.c_str());
                return;
              }
            }
      },
      s.name);
}

}  // namespace emu
