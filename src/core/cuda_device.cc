#include "src/core/cuda_device.h"

#if MOE_TRAIN_HAS_CUDA
#include <cuda_runtime.h>

#include <cstdio>
#if !MOE_TRAIN_CUDA_EMULATOR
#include "third_party/cuda/cuda_libraries.h"
#endif
#endif

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace moe {

#if MOE_TRAIN_HAS_CUDA
int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  return n;
}

std::string cuda_libraries_missing() {
#if MOE_TRAIN_CUDA_EMULATOR
  return "";  // the emulator is the libraries
#else
  return cuda_libraries::load();
#endif
}

std::string cuda_unavailable_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return cudaGetErrorString(e);
  }
  if (n > 0) return "";
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  return visible ? std::string("no GPU listed (CUDA_VISIBLE_DEVICES=") + visible + ")" : "no GPU listed";
}

std::string cuda_device_description(int device) {
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return "";
  char buf[320];
  std::snprintf(buf, sizeof buf, "%s, %.1f GiB, sm_%d%d", p.name,
                static_cast<double>(p.totalGlobalMem) / (1024.0 * 1024 * 1024), p.major, p.minor);
  return buf;
}
int cuda_compute_capability(int device) {
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return 0;
  return p.major * 10 + p.minor;
}
int64_t cuda_device_memory_bytes(int device) {
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return 0;
  return static_cast<int64_t>(p.totalGlobalMem);
}

int select_cuda_device(int64_t local_rank) {
  const int n = cuda_device_count();
  if (n == 0) throw std::runtime_error("train.device = \"cuda\", but no GPU is visible to this process");
  const int device = static_cast<int>(local_rank % n);
  if (const cudaError_t e = cudaSetDevice(device); e != cudaSuccess) {
    throw std::runtime_error(std::string("cudaSetDevice(") + std::to_string(device) + "): " + cudaGetErrorString(e));
  }
  return device;
}

double cuda_peak_bf16_flops(int device) {
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return 0;
  if (p.major == 9 && p.minor == 0)
    return std::string(p.name).find("PCIe") != std::string::npos ? 756e12 : 989e12;  // H100/H200 SXM, dense
  if (p.major == 8 && p.minor == 0) return 312e12;                                   // A100
  return 0;
}
#else
int cuda_device_count() { return 0; }
std::string cuda_unavailable_reason() {
  return "this build has no CUDA (built without a CUDA toolkit, docs/building.md)";
}
std::string cuda_libraries_missing() { return cuda_unavailable_reason(); }
std::string cuda_device_description(int) { return ""; }
int cuda_compute_capability(int) { return 0; }
int64_t cuda_device_memory_bytes(int) { return 0; }
int select_cuda_device(int64_t) { throw std::runtime_error("train.device = \"cuda\", but this build has no CUDA"); }
double cuda_peak_bf16_flops(int) { return 0; }
#endif

}  // namespace moe
