// Which GPUs this process can use. Any CUDA error (no driver, no device, a
// build without CUDA) counts as "no GPU": `train.device = "auto"` then runs on CPU.
#pragma once

#include <cstdint>
#include <string>

namespace moe {

int cuda_device_count();
// "" when the CUDA libraries that are opened at run time (cuBLASLt, NCCL:
// third_party/cuda/cuda_libraries.h) are there; else one line naming the
// missing one, where it was looked for, and the fix. The CPU path never needs
// them: call it where CUDA is asked for.
std::string cuda_libraries_missing();
// Why cuda_device_count() is 0, in words for an error line: the CUDA error
// ("CUDA driver version is insufficient for CUDA runtime version", ...), "no
// GPU listed (CUDA_VISIBLE_DEVICES=...)", or that the build has no CUDA.
std::string cuda_unavailable_reason();
// "NVIDIA H100 80GB HBM3, 79.1 GiB, sm_90" for device i (empty without one).
std::string cuda_device_description(int device);
// Compute capability of device i as major * 10 + minor (90 for sm_90), 0 without one.
int cuda_compute_capability(int device);
// Total memory of device i in bytes (0 without one).
int64_t cuda_device_memory_bytes(int device);
// Makes GPU (local_rank mod the GPUs visible) this process's device, before
// any allocation or stream: one GPU per rank on a node. Returns its index;
// throws std::runtime_error when there is no GPU.
int select_cuda_device(int64_t local_rank);
// bf16 dense tensor-core peak of device i in FLOP/s, from its compute
// capability (989e12 for sm_90, H100/H200 SXM; 312e12 for sm_80, A100), 0
// when unknown: the denominator of MFU.
double cuda_peak_bf16_flops(int device);

}  // namespace moe
