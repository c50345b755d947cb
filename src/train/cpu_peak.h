// The CPU's fp32 matmul throughput, measured: the MFU denominator on CPU,
// where no spec-sheet peak applies (a GPU uses its bf16 peak instead).
#pragma once

namespace moe {

// FLOP/s of OpenBLAS sgemm on 512 x 512 x 512 (best of a few runs, ~0.1 s).
double measure_cpu_peak_flops();

}  // namespace moe
