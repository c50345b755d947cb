// The per-block launch rule of src/kernels/cuda/launch_limits.h, on the rows
// ptxas writes: the router's finalize kernel as it once was (80 registers,
// launched with 1024 threads) is refused on both A100 and H100, as the driver
// refuses it ("too many resources requested for launch").
#include "src/kernels/cuda/launch_limits.h"

#include <catch2/catch.hpp>

#include <stdexcept>

namespace moe::launch_limits {
namespace {

// What `nvcc --resource-usage` reported for the old aux_finalize_kernel.
const char* kOldFinalize =
    "sm_80\tsrc/kernels/cuda/router_aux.cu\t_ZN3moe4cuda46_GLOBAL__N__b354bb83_13_router_aux_cu_028f351c19aux_"
    "finalize_kernelEPfPKdS4_PKiS6_lliii\t80\t256\n"
    "sm_90\tsrc/kernels/cuda/router_aux.cu\t_ZN3moe4cuda46_GLOBAL__N__b354bb83_13_router_aux_cu_028f351c19aux_"
    "finalize_kernelEPfPKdS4_PKiS6_lliii\t80\t256\n";

const GpuLimits& gpu(const std::string& arch) {
  for (const GpuLimits& g : checked_gpus())
    if (g.arch == arch) return g;
  throw std::logic_error("no GPU for " + arch);
}

TEST_CASE("rows are parsed and demangled as the compiler wrote them") {
  const auto rows = parse_table(kOldFinalize);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].arch == "sm_80");
  CHECK(rows[0].source == "src/kernels/cuda/router_aux.cu");
  CHECK(rows[0].kernel ==
        "moe::cuda::(anonymous namespace)::aux_finalize_kernel(float*, double const*, double const*, int const*, int "
        "const*, long, long, int, int, int)");
  CHECK(rows[0].registers == 80);
  CHECK(rows[0].static_shared_bytes == 256);
}

TEST_CASE("malformed rows name their line") {
  CHECK_THROWS_WITH(parse_table("sm_80\ta.cu\tk\t80\n"), Catch::Contains("line 1") && Catch::Contains("5 tab"));
  CHECK_THROWS_WITH(parse_table("\nsm_80\ta.cu\tk\teighty\t0\n"), Catch::Contains("line 2"));
  CHECK_THROWS_WITH(parse_table("sm_80\ta.cu\tk\t80\t12x\n"), Catch::Contains("byte count"));
}

TEST_CASE("80 registers x 1024 threads is over the 65,536 registers of a block, on A100 and H100") {
  for (const KernelResources& k : parse_table(kOldFinalize)) {
    const GpuLimits& g = gpu(k.arch);
    CHECK(registers_per_block(k, g, 1024) == 81920);
    const std::string why = launch_violation(k, g, 1024, 0);
    CHECK_THAT(why, Catch::Contains("81920 registers per block") && Catch::Contains("65536") &&
                        Catch::Contains("at most 800 threads") && Catch::Contains("__launch_bounds__(1024)"));
    CHECK(launch_violation(k, g, 800, 0).empty());
    CHECK_FALSE(launch_violation(k, g, 832, 0).empty());
    CHECK(launch_violation(k, g, 256, 0).empty());
  }
}

TEST_CASE("registers are given to whole warps in units of 256") {
  KernelResources k;
  k.arch = "sm_90";
  k.kernel = "k()";
  k.registers = 65;  // 65 x 32 = 2080, rounded up to 2304 per warp
  CHECK(registers_per_block(k, gpu("sm_90"), 1) == 2304);
  CHECK(registers_per_block(k, gpu("sm_90"), 33) == 2 * 2304);
  CHECK(!launch_violation(k, gpu("sm_90"), 1024, 0).empty());  // 32 x 2304 = 73728
  CHECK(launch_violation(k, gpu("sm_90"), 896, 0).empty());    // 28 x 2304 = 64512
  k.registers = 64;
  CHECK(launch_violation(k, gpu("sm_90"), 1024, 0).empty());  // exactly 65536
}

TEST_CASE("threads and shared memory: 1024 threads, 48 KiB static, the opt-in maximum of each GPU") {
  KernelResources k;
  k.kernel = "k()";
  k.registers = 32;
  for (const char* arch : {"sm_80", "sm_90"}) {
    k.arch = arch;
    CHECK_THAT(launch_violation(k, gpu(arch), 1025, 0), Catch::Contains("1 to 1024 threads"));
    k.static_shared_bytes = 48 * 1024 + 16;
    CHECK_THAT(launch_violation(k, gpu(arch), 128, 0), Catch::Contains("static shared memory"));
    k.static_shared_bytes = 1024;
  }
  // 200 KiB of dynamic shared memory fits an H100 block (227 KiB), not an A100 one (163 KiB).
  k.arch = "sm_80";
  CHECK_THAT(launch_violation(k, gpu("sm_80"), 128, 200 * 1024), Catch::Contains("163 KiB"));
  CHECK(launch_violation(k, gpu("sm_80"), 128, 162 * 1024).empty());
  CHECK(!launch_violation(k, gpu("sm_80"), 128, 163 * 1024).empty());  // static + dynamic counts
  k.arch = "sm_90";
  CHECK(launch_violation(k, gpu("sm_90"), 128, 200 * 1024).empty());
  CHECK_THAT(launch_violation(k, gpu("sm_90"), 128, 227 * 1024), Catch::Contains("227 KiB"));
}

TEST_CASE("registered tables are found by architecture and signature") {
  register_table(kOldFinalize);
  CHECK(has_source("src/kernels/cuda/router_aux.cu"));
  CHECK_FALSE(has_source("src/kernels/cuda/none.cu"));
  const std::string name = parse_table(kOldFinalize)[0].kernel;
  REQUIRE(find("sm_90", name) != nullptr);
  CHECK(find("sm_90", name)->registers == 80);
  CHECK(find("sm_86", name) == nullptr);
}

}  // namespace
}  // namespace moe::launch_limits
