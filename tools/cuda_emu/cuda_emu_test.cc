// The CUDA emulator's own promises: barriers and warp collectives behave as
// the programming model says, a missing barrier or a divergent one shows,
// device memory is out of the host's reach, capture refuses host syncs and
// replays, cuBLASLt multiplies, and NCCL works between processes.
#include <catch2/catch.hpp>
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>
#include <nccl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <numeric>
#include <vector>

namespace {

template <typename T>
T* device_array(size_t n) {
  T* p = nullptr;
  REQUIRE(cudaMalloc(&p, n * sizeof(T)) == cudaSuccess);
  return p;
}

template <typename T>
std::vector<T> read(const T* p, size_t n) {
  std::vector<T> out(n);
  REQUIRE(cudaMemcpy(out.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
  return out;
}

#define LAUNCH(kernel, ...) ::emu::launch(#kernel, __FILE__, __LINE__, kernel, __VA_ARGS__)

// Thread t writes t, then reads its neighbour's value after the barrier.
__global__ void neighbour_kernel(int* out, bool with_barrier) {
  __shared__ int values[64];
  values[threadIdx.x] = static_cast<int>(threadIdx.x);
  if (with_barrier) __syncthreads();
  out[blockIdx.x * 64 + threadIdx.x] = values[(threadIdx.x + 1) % 64];
}

__global__ void warp_kernel(int* out) {
  const int lane = threadIdx.x & 31;
  int sum = lane;
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  const unsigned odd = __ballot_sync(0xffffffffu, lane & 1);
  const unsigned same = __match_any_sync(0xffffffffu, lane / 8);
  const int up = __shfl_up_sync(0xffffffffu, lane, 1);
  out[threadIdx.x * 4 + 0] = sum;
  out[threadIdx.x * 4 + 1] = static_cast<int>(odd);
  out[threadIdx.x * 4 + 2] = static_cast<int>(same);
  out[threadIdx.x * 4 + 3] = up;
}

// Lanes 0-15 wait for the block, lanes 16-31 of the same warp for the warp.
__global__ void deadlock_kernel(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncwarp();
  }
  out[threadIdx.x] = 1;
}

__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void early_exit_kernel(int* out) {
  if (threadIdx.x >= 48) return;  // exited threads do not hold up a barrier
  __shared__ int total;
  if (threadIdx.x == 0) total = 0;
  __syncthreads();
  atomicAdd(&total, 1);
  __syncthreads();
  out[threadIdx.x] = total;
}

__global__ void dynamic_shared_kernel(float* out) {
  float* buffer = reinterpret_cast<float*>(::emu::dynamic_shared());
  out[threadIdx.x] = buffer[threadIdx.x];  // never written: reads the fill
}

__global__ void add_one_kernel(int* x) { x[threadIdx.x] += 1; }

// One 16x16x16 product; `shift` elements off the 256-bit alignment WMMA requires.
__global__ void wmma_kernel(float* out, const __nv_bfloat16* a, const __nv_bfloat16* b, int shift) {
  using namespace nvcuda;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  wmma::load_matrix_sync(fa, a + shift, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(out, acc, 16, wmma::mem_row_major);
}

__global__ void shared_overrun_kernel(int* out) {
  int* buffer = reinterpret_cast<int*>(::emu::dynamic_shared());
  buffer[threadIdx.x] = 1;  // one int per thread, but 16 ints were asked for
  out[threadIdx.x] = buffer[threadIdx.x];
}

// Forks, runs `child` there, and returns how the child ended.
template <typename Child>
int run_in_child(const Child& child) {
  const pid_t pid = fork();
  if (pid == 0) {
    child();
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

}  // namespace

TEST_CASE("__syncthreads orders shared memory, and a missing one changes the result") {
  int* out = device_array<int>(128);
  LAUNCH(neighbour_kernel, dim3(2), dim3(64))(out, true);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  std::vector<int> with = read(out, 128);
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 64; ++t) CHECK(with[b * 64 + t] == (t + 1) % 64);

  // Blocks alternate between ascending and descending resumption: without the
  // barrier one of the two reads values that were not written yet.
  LAUNCH(neighbour_kernel, dim3(2), dim3(64))(out, false);
  std::vector<int> without = read(out, 128);
  CHECK(without != with);
  cudaFree(out);
}

TEST_CASE("shuffles, ballots and matches follow the warp's lanes") {
  int* out = device_array<int>(64 * 4);
  LAUNCH(warp_kernel, dim3(1), dim3(64))(out);
  std::vector<int> r = read(out, 64 * 4);
  for (int t = 0; t < 64; ++t) {
    const int lane = t & 31;
    CHECK(r[t * 4 + 0] == 496);  // 0 + 1 + ... + 31 in every lane
    CHECK(static_cast<unsigned>(r[t * 4 + 1]) == 0xAAAAAAAAu);
    CHECK(static_cast<unsigned>(r[t * 4 + 2]) == 0xFFu << (lane / 8 * 8));
    CHECK(r[t * 4 + 3] == (lane == 0 ? 0 : lane - 1));
  }
  cudaFree(out);
}

TEST_CASE("exited threads do not block a barrier") {
  int* out = device_array<int>(64);
  REQUIRE(cudaMemset(out, 0, 64 * sizeof(int)) == cudaSuccess);
  LAUNCH(early_exit_kernel, dim3(1), dim3(64))(out);
  std::vector<int> r = read(out, 64);
  for (int t = 0; t < 48; ++t) CHECK(r[t] == 48);
  cudaFree(out);
}

TEST_CASE("dynamic shared memory starts as all-ones bytes, and launches beyond the limits fail") {
  float* out = device_array<float>(32);
  LAUNCH(dynamic_shared_kernel, dim3(1), dim3(32), 32 * sizeof(float))(out);
  for (float v : read(out, 32)) CHECK(std::isnan(v));

  LAUNCH(dynamic_shared_kernel, dim3(1), dim3(32), 64 * 1024)(out);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);  // over 48 KiB without cudaFuncSetAttribute
  REQUIRE(cudaFuncSetAttribute(dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024) ==
          cudaSuccess);
  LAUNCH(dynamic_shared_kernel, dim3(1), dim3(32), 64 * 1024)(out);
  CHECK(cudaGetLastError() == cudaSuccess);
  LAUNCH(dynamic_shared_kernel, dim3(1), dim3(2048))(out);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);

  // The raised limit belongs to the device it was raised on.
  REQUIRE(cudaSetDevice(1) == cudaSuccess);
  LAUNCH(dynamic_shared_kernel, dim3(1), dim3(32), 64 * 1024)(out);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  REQUIRE(cudaSetDevice(0) == cudaSuccess);
  cudaFree(out);
}

TEST_CASE("a deadlock or a divergent barrier is a launch failure that sticks") {
  for (auto kernel : {deadlock_kernel, divergent_barrier_kernel}) {
    const int status = run_in_child([kernel] {
      int* out = nullptr;
      cudaMalloc(&out, 64 * sizeof(int));
      LAUNCH(kernel, dim3(1), dim3(64))(out);
      const bool failed = cudaGetLastError() == cudaErrorLaunchFailure;
      const bool sticks = cudaMemset(out, 0, 4) == cudaErrorLaunchFailure;
      _exit(failed && sticks ? 0 : 1);
    });
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
}

TEST_CASE("WMMA multiplies a tile, and refuses operands that are not 256-bit aligned") {
  std::vector<__nv_bfloat16> a(16 * 16 + 16), b(16 * 16);
  for (int i = 0; i < 16 * 16; ++i) {
    a[i] = __nv_bfloat16(static_cast<float>(i % 7) - 3.0f);
    b[i] = __nv_bfloat16(static_cast<float>(i % 5) - 2.0f);
  }
  auto* A = device_array<__nv_bfloat16>(a.size());
  auto* B = device_array<__nv_bfloat16>(b.size());
  float* out = device_array<float>(16 * 16);
  cudaMemcpy(A, a.data(), a.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(B, b.data(), b.size() * 2, cudaMemcpyHostToDevice);
  LAUNCH(wmma_kernel, dim3(1), dim3(32))(out, A, B, 0);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  const std::vector<float> got = read(out, 16 * 16);
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float want = 0;  // B is col-major: element (k, n) at b[n * 16 + k]
      for (int k = 0; k < 16; ++k) want += static_cast<float>(a[m * 16 + k]) * static_cast<float>(b[n * 16 + k]);
      CHECK(got[m * 16 + n] == want);
    }
  cudaFree(out);

  const int status = run_in_child([&] {
    float* o = nullptr;
    cudaMalloc(&o, 16 * 16 * sizeof(float));
    LAUNCH(wmma_kernel, dim3(1), dim3(32))(o, A, B, 8);  // 16 bytes off
    _exit(cudaGetLastError() == cudaErrorLaunchFailure ? 0 : 1);
  });
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  cudaFree(A);
  cudaFree(B);
}

TEST_CASE("an access past the end of dynamic shared memory faults") {
  const int status = run_in_child([] {
    std::signal(SIGSEGV, SIG_DFL);
    int* out = nullptr;
    cudaMalloc(&out, 2048 * sizeof(int));
    LAUNCH(shared_overrun_kernel, dim3(1), dim3(1024), 16 * sizeof(int))(out);
  });
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGSEGV);
}

TEST_CASE("device memory is out of the host's reach, and copies are checked") {
  const int status = run_in_child([] {
    std::signal(SIGSEGV, SIG_DFL);  // not Catch's handler: the parent checks the signal
    int* p = nullptr;
    cudaMalloc(&p, 16);
    volatile int x = p[0];  // what would fault or read garbage on a GPU
    (void)x;
  });
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGSEGV);

  int* p = device_array<int>(4);
  std::vector<int> host(8, 7);
  CHECK(cudaMemcpy(p, host.data(), 8 * sizeof(int), cudaMemcpyHostToDevice) == cudaErrorInvalidValue);  // past the end
  CHECK(cudaMemcpy(host.data(), p, 4 * sizeof(int), cudaMemcpyHostToDevice) == cudaErrorInvalidValue);  // wrong kind
  CHECK(cudaFree(host.data()) == cudaErrorInvalidDevicePointer);
  cudaGetLastError();
  cudaFree(p);
}

TEST_CASE("stream capture records work, refuses host syncs, and replays") {
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  int* x = device_array<int>(32);
  REQUIRE(cudaMemsetAsync(x, 0, 32 * sizeof(int), s) == cudaSuccess);

  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  LAUNCH(add_one_kernel, dim3(1), dim3(32), 0, s)(x);
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
  CHECK(read(x, 32) == std::vector<int>(32, 0));  // recorded, not run

  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  REQUIRE(cudaGraphLaunch(exec, s) == cudaSuccess);
  REQUIRE(cudaGraphLaunch(exec, s) == cudaSuccess);
  CHECK(read(x, 32) == std::vector<int>(32, 2));

  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  CHECK(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported);
  void* p = nullptr;
  CHECK(cudaMalloc(&p, 16) == cudaErrorStreamCaptureUnsupported);
  cudaGraph_t broken = nullptr;
  CHECK(cudaStreamEndCapture(s, &broken) == cudaErrorStreamCaptureInvalidated);
  CHECK(broken == nullptr);
  cudaGetLastError();
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaFree(x);
  cudaStreamDestroy(s);
}

TEST_CASE("cuBLASLt computes column-major D = op(A) op(B) + beta C in bf16 and f32") {
  const int m = 3, n = 2, k = 4;
  // A stored transposed (k x m), B as is (k x n).
  std::vector<float> a(k * m), b(k * n), c(m * n, 1.0f);
  std::iota(a.begin(), a.end(), 1.0f);
  std::iota(b.begin(), b.end(), -3.0f);
  std::vector<__nv_bfloat16> a16(a.begin(), a.end()), b16(b.begin(), b.end());
  auto* A = device_array<__nv_bfloat16>(a.size());
  auto* B = device_array<__nv_bfloat16>(b.size());
  auto* D = device_array<float>(c.size());
  cudaMemcpy(A, a16.data(), a16.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(B, b16.data(), b16.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(D, c.data(), c.size() * 4, cudaMemcpyHostToDevice);

  cublasLtHandle_t h;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t la, lb, ld;
  REQUIRE(cublasLtCreate(&h) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS);
  const cublasOperation_t t = CUBLAS_OP_T;
  REQUIRE(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, k, m, k) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, k, n, k) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, m, n, m) == CUBLAS_STATUS_SUCCESS);
  const float alpha = 1.0f, beta = 1.0f;
  REQUIRE(cublasLtMatmul(h, desc, &alpha, A, la, B, lb, &beta, D, ld, D, ld, nullptr, nullptr, 0, nullptr) ==
          CUBLAS_STATUS_SUCCESS);
  const std::vector<float> got = read(D, c.size());
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      float want = 1.0f;
      for (int p = 0; p < k; ++p) want += a[i * k + p] * b[j * k + p];
      CHECK(got[j * m + i] == want);
    }

  cublasLtMatrixLayout_t bad;
  REQUIRE(cublasLtMatrixLayoutCreate(&bad, CUDA_R_32F, m, n, m - 1) == CUBLAS_STATUS_SUCCESS);
  CHECK(cublasLtMatmul(h, desc, &alpha, A, la, B, lb, &beta, D, bad, D, bad, nullptr, nullptr, 0, nullptr) ==
        CUBLAS_STATUS_INVALID_VALUE);
  cudaFree(A);
  cudaFree(B);
  cudaFree(D);
}

TEST_CASE("NCCL all-reduce, all-gather, reduce-scatter and send/recv between processes") {
  constexpr int kRanks = 3;
  ncclUniqueId id;
  REQUIRE(ncclGetUniqueId(&id) == ncclSuccess);
  std::vector<pid_t> children;
  for (int rank = 0; rank < kRanks; ++rank) {
    const pid_t pid = fork();
    if (pid == 0) {
      ncclComm_t comm;
      if (ncclCommInitRank(&comm, kRanks, id, rank) != ncclSuccess) _exit(10);
      float* x = nullptr;
      float* all = nullptr;
      cudaMalloc(&x, 2 * sizeof(float));
      cudaMalloc(&all, 2 * kRanks * sizeof(float));
      const float mine[2] = {static_cast<float>(rank), 10.0f * rank};
      cudaMemcpy(x, mine, sizeof mine, cudaMemcpyHostToDevice);
      ncclAllGather(x, all, 2, ncclFloat32, comm, nullptr);
      ncclAllReduce(x, x, 2, ncclFloat32, ncclSum, comm, nullptr);
      float sum[2], gathered[2 * kRanks];
      cudaMemcpy(sum, x, sizeof sum, cudaMemcpyDeviceToHost);
      cudaMemcpy(gathered, all, sizeof gathered, cudaMemcpyDeviceToHost);
      if (sum[0] != 3.0f || sum[1] != 30.0f) _exit(11);
      for (int r = 0; r < kRanks; ++r)
        if (gathered[2 * r] != r || gathered[2 * r + 1] != 10.0f * r) _exit(12);

      // reduce-scatter of [r, r, r] (one element per rank) sums to 0+1+2.
      float in[kRanks] = {static_cast<float>(rank), static_cast<float>(rank), static_cast<float>(rank)};
      cudaMemcpy(all, in, sizeof in, cudaMemcpyHostToDevice);
      ncclReduceScatter(all, x, 1, ncclFloat32, ncclSum, comm, nullptr);
      float piece;
      cudaMemcpy(&piece, x, sizeof piece, cudaMemcpyDeviceToHost);
      if (piece != 3.0f) _exit(13);

      // A ring in one group: send my rank to the next, receive from the previous.
      float* got = nullptr;
      cudaMalloc(&got, sizeof(float));
      cudaMemcpy(x, mine, sizeof(float), cudaMemcpyHostToDevice);
      ncclGroupStart();
      ncclSend(x, 1, ncclFloat32, (rank + 1) % kRanks, comm, nullptr);
      ncclRecv(got, 1, ncclFloat32, (rank + kRanks - 1) % kRanks, comm, nullptr);
      ncclGroupEnd();
      float from;
      cudaMemcpy(&from, got, sizeof from, cudaMemcpyDeviceToHost);
      if (from != static_cast<float>((rank + kRanks - 1) % kRanks)) _exit(14);
      ncclCommDestroy(comm);
      _exit(0);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
}

TEST_CASE("ranks that disagree on a collective are stopped, naming both calls") {
  ncclUniqueId id;
  REQUIRE(ncclGetUniqueId(&id) == ncclSuccess);
  std::vector<pid_t> children;
  for (int rank = 0; rank < 2; ++rank) {
    const pid_t pid = fork();
    if (pid == 0) {
      std::signal(SIGABRT, SIG_DFL);
      ncclComm_t comm;
      if (ncclCommInitRank(&comm, 2, id, rank) != ncclSuccess) _exit(10);
      float* x = nullptr;
      cudaMalloc(&x, 4 * sizeof(float));
      ncclAllReduce(x, x, rank == 0 ? 2 : 3, ncclFloat32, ncclSum, comm, nullptr);  // 2 elements vs 3
      _exit(0);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGABRT);
  }
}
