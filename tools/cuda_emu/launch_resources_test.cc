// The emulator's launch check against the launch-resource table: a kernel
// whose row says 80 registers per thread fails at 1024 threads, as the driver
// refuses such a launch on an A100 or H100. In a file of its own: once a
// source file has rows, every kernel of that file must have one.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <string>

#include "src/kernels/cuda/launch_limits.h"
#include "tools/cuda_emu/kernel_symbols.h"

namespace {

// Stands for a kernel that ptxas built with 80 registers per thread.
__global__ void register_heavy_kernel(float* out) { out[threadIdx.x] = 1.0f; }

#define LAUNCH(kernel, ...) ::emu::launch(#kernel, __FILE__, __LINE__, kernel, __VA_ARGS__)

TEST_CASE("a launch over a block's registers fails as on the device, from the launch-resource table") {
  const std::string mangled = emu::kernel_symbol(reinterpret_cast<const void*>(register_heavy_kernel));
  REQUIRE(!mangled.empty());
  namespace limits = moe::launch_limits;
  for (const char* arch : {"sm_80", "sm_90"}) {
    limits::register_table((std::string(arch) + "\t" + __FILE__ + "\t" + mangled + "\t80\t0\n").c_str());
  }
  float* out = nullptr;
  REQUIRE(cudaMalloc(&out, 1024 * sizeof(float)) == cudaSuccess);
  LAUNCH(register_heavy_kernel, dim3(1), dim3(800))(out);
  CHECK(cudaGetLastError() == cudaSuccess);
  LAUNCH(register_heavy_kernel, dim3(1), dim3(1024))(out);  // 80 x 1024 > 65,536 registers
  CHECK(cudaGetLastError() == cudaErrorLaunchOutOfResources);
  CHECK(std::string(cudaGetErrorString(cudaErrorLaunchOutOfResources)) == "too many resources requested for launch");
  cudaFree(out);
}

}  // namespace
