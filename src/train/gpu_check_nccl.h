// The collectives that moe_train's layouts use, across the GPUs of one node,
// one process per GPU (check-gpu's children): all-reduce, all-gather,
// reduce-scatter and all-to-all (grouped send/recv). Each result is checked
// exactly (small integers in fp32 add up without rounding) and each is timed,
// with the bus bandwidth as nccl-tests defines it (the data a rank moves over
// its links per second: all-reduce 2(n-1)/n x size / time; the others
// (n-1)/n x the gathered or scattered size / time).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "src/train/gpu_check.h"

namespace moe {

// A new NCCL id, as hex for a child's command line. With NCCL the bootstrap
// root listens in the calling process, which must outlive the children's
// ncclCommInitRank.
std::string new_nccl_check_id();

// Rank `rank` of `nranks` (GPU `device`), joining the others through `id_hex`.
GpuCheckReport check_nccl(int device, int rank, int nranks, const std::string& id_hex);

}  // namespace moe
