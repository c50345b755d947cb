// The CPU's fp32 matmul throughput: the MFU denominator on CPU, where no
// spec-sheet peak applies (a GPU uses its bf16 peak instead). Measured once
// per machine and kept in the cache folder, so that two runs of the same
// workload report the same MFU for the same speed: a peak measured again at
// every start moved with whatever else the machine was doing.
#pragma once

#include <optional>
#include <string>

namespace moe {

struct CpuPeak {
  double flops = 0;    // FLOP/s
  std::string source;  // "measured now, kept in PATH" or "measured before, PATH"
};

// The cached figure for this machine (CPU model, the CPUs this process may
// use, the BLAS library and its threads), or a new measurement, cached.
CpuPeak cpu_peak_flops();

// The figure kept for this machine, if a run measured it (nothing is measured).
std::optional<double> cached_cpu_peak_flops();

// FLOP/s of sgemm on 1024 x 1024 x 1024, best of 5 runs after a warm-up (~0.1 s).
double measure_cpu_peak_flops();

// The cache file for this machine.
std::string cpu_peak_cache_path();

}  // namespace moe
