#include "src/train/gpu_check_nccl.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <stdexcept>

#include "src/core/cuda_device.h"

#if MOE_TRAIN_HAS_CUDA
#include <cuda_runtime.h>
#include <nccl.h>

#include "src/core/cuda_stream.h"
#endif

namespace moe {

#if MOE_TRAIN_HAS_CUDA
namespace {

#if MOE_TRAIN_CUDA_EMULATOR
constexpr int64_t kBytesPerRank = int64_t{1} << 20;  // the emulator's collectives are memcpys: keep them small
#else
constexpr int64_t kBytesPerRank = int64_t{64} << 20;  // near the bus bandwidth on NVLink and PCIe
#endif
constexpr int kIterations = 5;

void cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
void nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw std::runtime_error(std::string(what) + ": " + ncclGetErrorString(r));
}

struct DeviceFloats {
  float* p = nullptr;
  explicit DeviceFloats(int64_t n) { cuda(cudaMalloc(&p, static_cast<size_t>(n) * sizeof(float)), "cudaMalloc"); }
  ~DeviceFloats() { cudaFree(p); }
};

// Runs `collective` once to check, then kIterations times to time; fills the row.
GpuCheckRow run(const std::string& name, int nranks, int64_t send_floats, int64_t recv_floats, double bus_factor,
                double bus_bytes, const std::function<float(int64_t)>& send_value,
                const std::function<float(int64_t)>& want,
                const std::function<void(const float*, float*)>& collective) {
  GpuCheckRow r;
  r.op = "nccl " + name;
  r.shape = fmt::format("{:.1f} MiB per rank x {} GPUs", static_cast<double>(send_floats) * 4 / (1 << 20), nranks);
  r.dtype = "f32";
  r.tolerance = "exact";
  try {
    DeviceFloats send(send_floats), recv(recv_floats);
    std::vector<float> host(static_cast<size_t>(send_floats));
    for (int64_t i = 0; i < send_floats; ++i) host[static_cast<size_t>(i)] = send_value(i);
    cuda(cudaMemcpy(send.p, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice), "upload");
    cudaStream_t s = cuda::stream();
    collective(send.p, recv.p);
    cuda(cudaStreamSynchronize(s), "first call");
    std::vector<float> got(static_cast<size_t>(recv_floats));
    cuda(cudaMemcpy(got.data(), recv.p, got.size() * sizeof(float), cudaMemcpyDeviceToHost), "download");
    r.passed = true;
    for (int64_t i = 0; i < recv_floats; ++i) {
      const double err = std::fabs(static_cast<double>(got[static_cast<size_t>(i)]) - want(i));
      r.max_error = std::max(r.max_error, err);
      if (err != 0 && r.passed) {
        r.passed = false;
        r.worst = err;
        r.detail = fmt::format("element {} = {}, expected {}", i, got[static_cast<size_t>(i)], want(i));
      }
    }
    const auto start = std::chrono::steady_clock::now();
    for (int it = 0; it < kIterations; ++it) collective(send.p, recv.p);
    cuda(cudaStreamSynchronize(s), "timed calls");
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / kIterations;
    r.ms = seconds * 1e3;
    if (r.passed) r.detail = fmt::format("bus bandwidth {:.1f} GB/s", bus_factor * bus_bytes / seconds / 1e9);
  } catch (const std::exception& e) {
    r.passed = false;
    r.detail = e.what();
  }
  return r;
}

}  // namespace

std::string new_nccl_check_id() {
  ncclUniqueId id{};
  nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  std::string hex;
  for (unsigned char c : id.internal) hex += fmt::format("{:02x}", c);
  return hex;
}

GpuCheckReport check_nccl(int device, int rank, int nranks, const std::string& id_hex) {
  const auto start = std::chrono::steady_clock::now();
  GpuCheckReport report;
  report.device = select_cuda_device(device);
  report.gpu = cuda_device_description(report.device);
  ncclUniqueId id{};
  if (id_hex.size() != 2 * sizeof id.internal) throw std::invalid_argument("check-gpu: a malformed NCCL id");
  for (size_t i = 0; i < sizeof id.internal; ++i)
    id.internal[i] = static_cast<char>(std::stoi(id_hex.substr(2 * i, 2), nullptr, 16));
  ncclComm_t comm = nullptr;
  nccl(ncclCommInitRank(&comm, nranks, id, rank), "ncclCommInitRank");
  cudaStream_t s = cuda::stream();
  const int64_t n = nranks, count = kBytesPerRank / 4 / n * n, chunk = count / n;
  const double spread = static_cast<double>(n - 1) / n;
  auto base = [](int64_t i) { return static_cast<float>(i % 97); };
  const float r = static_cast<float>(rank), sum_ranks = static_cast<float>(n * (n - 1) / 2);

  report.rows.push_back(run(
      "all-reduce (sum)", nranks, count, count, 2 * spread, count * 4.0, [&](int64_t i) { return base(i) + r; },
      [&](int64_t i) { return n * base(i) + sum_ranks; },
      [&](const float* in, float* out) {
        nccl(ncclAllReduce(in, out, count, ncclFloat32, ncclSum, comm, s), "ncclAllReduce");
      }));
  report.rows.push_back(run(
      "all-gather", nranks, chunk, count, spread, count * 4.0, [&](int64_t i) { return base(i) + r; },
      [&](int64_t i) { return base(i % chunk) + static_cast<float>(i / chunk); },
      [&](const float* in, float* out) {
        nccl(ncclAllGather(in, out, chunk, ncclFloat32, comm, s), "ncclAllGather");
      }));
  report.rows.push_back(run(
      "reduce-scatter (sum)", nranks, count, chunk, spread, count * 4.0, [&](int64_t i) { return base(i) + r; },
      [&](int64_t i) { return n * base(rank * chunk + i) + sum_ranks; },
      [&](const float* in, float* out) {
        nccl(ncclReduceScatter(in, out, chunk, ncclFloat32, ncclSum, comm, s), "ncclReduceScatter");
      }));
  // All-to-all: element j of the chunk for peer p from rank q holds 1000 q + p + j % 7.
  report.rows.push_back(run(
      "all-to-all (send/recv)", nranks, count, count, spread, count * 4.0,
      [&](int64_t i) { return 1000.0f * r + static_cast<float>(i / chunk) + static_cast<float>(i % chunk % 7); },
      [&](int64_t i) { return 1000.0f * static_cast<float>(i / chunk) + r + static_cast<float>(i % chunk % 7); },
      [&](const float* in, float* out) {
        nccl(ncclGroupStart(), "ncclGroupStart");
        for (int p = 0; p < nranks; ++p) {
          nccl(ncclSend(in + p * chunk, chunk, ncclFloat32, p, comm, s), "ncclSend");
          nccl(ncclRecv(out + p * chunk, chunk, ncclFloat32, p, comm, s), "ncclRecv");
        }
        nccl(ncclGroupEnd(), "ncclGroupEnd");
      }));
  ncclCommDestroy(comm);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}
#else
std::string new_nccl_check_id() { throw std::logic_error("check-gpu: this build has no CUDA"); }
GpuCheckReport check_nccl(int, int, int, const std::string&) {
  throw std::logic_error("check-gpu: this build has no CUDA");
}
#endif

}  // namespace moe
