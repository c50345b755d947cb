// Sends each CUTLASS expert GEMM to the kernels of the current GPU's
// generation (cutlass_grouped_arch.h): sm_90 to the sm_90a kernels, sm_8x to
// the sm_80 ones. The kernel choice (src/kernels/kernel_choice.h) only calls
// here on those GPUs; any other gets a clear error, not a failed launch.
#include <cuda_runtime.h>

#include <atomic>
#include <stdexcept>
#include <string>

#include "src/kernels/cuda/cuda_check.h"
#include "src/kernels/cuda/cutlass_grouped_arch.h"
#include "src/kernels/cuda/cutlass_grouped_gemm.h"

namespace moe::cuda::cutlass_grouped {
namespace {

constexpr int kMaxDevices = 64;

ArchGemms& gemms_of(int device) {
  int major = 0, minor = 0;
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "CUTLASS grouped GEMM");
  check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "CUTLASS grouped GEMM");
  if (major == 9 && minor == 0) return sm90_gemms();
  if (major == 8) return sm80_gemms();
  throw std::runtime_error("sm_" + std::to_string(major * 10 + minor) +
                           ": the CUTLASS kernels are built for sm_80 (sm_8x) and sm_90a");
}

// Asked on every call, so remembered per device.
ArchGemms& current_gemms() {
  static std::atomic<ArchGemms*> known[kMaxDevices] = {};
  int device = 0;
  check(cudaGetDevice(&device), "CUTLASS grouped GEMM");
  if (device < 0 || device >= kMaxDevices) return gemms_of(device);
  ArchGemms* gemms = known[device].load(std::memory_order_relaxed);
  if (gemms == nullptr) {
    gemms = &gemms_of(device);
    known[device].store(gemms, std::memory_order_relaxed);
  }
  return *gemms;
}

}  // namespace

bool in_build() { return true; }

void prepare(int64_t E, int64_t I, int64_t O) { current_gemms().prepare(E, I, O); }

void forward(const Tensor& out_MO, const Tensor& x_MI, const Tensor& w_EIO, const Tensor& offsets_E1) {
  current_gemms().forward(out_MO, x_MI, w_EIO, offsets_E1);
}

void backward(const Tensor& dx_MI, const Tensor& dw_EIO, const Tensor& dout_MO, const Tensor& x_MI, const Tensor& w_EIO,
              const Tensor& offsets_E1) {
  current_gemms().backward(dx_MI, dw_EIO, dout_MO, x_MI, w_EIO, offsets_E1);
}

}  // namespace moe::cuda::cutlass_grouped
