// What each kernel needs of a GPU per block (registers and static shared
// memory, as ptxas reported them when the kernels were built for sm_80 and
// sm_90), and the rule a launch must follow on the GPUs those builds serve:
// A100 (sm_80) and H100/H200 (sm_90).
//
// The build records every kernel's usage (third_party/cuda/nvcc_compile.sh,
// `nvcc --resource-usage`) and embeds the table in the kernels' library, which
// registers it here at start-up. The CUDA emulator checks every launch against
// it, so a launch that a real GPU would refuse ("too many resources requested
// for launch") fails in the emulated tests too. Plain C++: no CUDA needed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::launch_limits {

// One kernel built for one architecture.
struct KernelResources {
  std::string arch;    // "sm_80"
  std::string source;  // the .cu file, as the build named it: "src/kernels/cuda/router_aux.cu"
  std::string kernel;  // demangled signature: "moe::cuda::(anonymous namespace)::aux_finalize_kernel(float*, ...)"
  int registers = 0;   // per thread
  int64_t static_shared_bytes = 0;
};

// Per-block limits of one GPU (CUDA programming guide, "Technical
// Specifications per Compute Capability").
struct GpuLimits {
  std::string name;        // "A100"
  std::string arch;        // the architecture its kernels are built for
  int max_threads = 1024;  // threads per block
  int registers_per_block = 65536;
  int register_unit = 256;  // registers are given to a warp in units of this many
  int64_t static_shared_bytes = 48 * 1024;
  int64_t shared_optin_bytes = 0;  // static + dynamic, with cudaFuncAttributeMaxDynamicSharedMemorySize raised
};

// A100 (sm_80: 163 KiB opt-in) and H100/H200 (sm_90: 227 KiB opt-in).
const std::vector<GpuLimits>& checked_gpus();

// Registers a block of `threads` threads takes: whole warps, each given
// registers in units of `register_unit`.
int64_t registers_per_block(const KernelResources& k, const GpuLimits& gpu, int64_t threads);

// Empty when `threads` threads with `dynamic_shared_bytes` of dynamic shared
// memory fit one block of `gpu`; otherwise one line saying which limit the
// launch breaks, by how much, and what to change.
std::string launch_violation(const KernelResources& k, const GpuLimits& gpu, int64_t threads,
                             int64_t dynamic_shared_bytes);

// Reads rows "arch<TAB>source<TAB>mangled name<TAB>registers<TAB>static shared bytes"
// (what nvcc_compile.sh writes); names are demangled. Throws std::invalid_argument
// naming the line when one is malformed.
std::vector<KernelResources> parse_table(const std::string& tsv);

// Adds a library's table to the process-wide one (the generated
// <library>_launch_resources.cc calls it during static initialisation).
bool register_table(const char* tsv);
// Every registered row.
const std::vector<KernelResources>& registered();
// The row for `kernel` (demangled) built for `arch`, or null.
const KernelResources* find(const std::string& arch, const std::string& kernel);
// Whether any row comes from `source`: a kernel of a registered file that has
// no row means the table is out of date, not that the kernel is a test's own.
bool has_source(const std::string& source);

// The demangled form of a mangled C++ name (the name itself if it is not one).
std::string demangle(const std::string& mangled);

}  // namespace moe::launch_limits
