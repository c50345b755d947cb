#include "src/core/cuda_device.h"

#if MOE_TRAIN_HAS_CUDA
#include <cuda_runtime.h>

#include <cstdio>
#endif

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

std::string cuda_device_description(int device) {
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return "";
  char buf[320];
  std::snprintf(buf, sizeof buf, "%s, %.1f GiB, sm_%d%d", p.name,
                static_cast<double>(p.totalGlobalMem) / (1024.0 * 1024 * 1024), p.major, p.minor);
  return buf;
}
#else
int cuda_device_count() { return 0; }
std::string cuda_device_description(int) { return ""; }
#endif

}  // namespace moe
