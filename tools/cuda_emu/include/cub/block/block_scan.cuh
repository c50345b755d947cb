// The CUDA emulator's cub::BlockScan: the sums the kernels ask for, over the
// block's threads in rank order. Same contract as CUB: every thread calls, and
// the caller synchronizes before it reuses TempStorage.
#pragma once

#include "cuda_runtime.h"

namespace cub {

template <typename T, int kBlockThreads>
class BlockScan {
 public:
  struct TempStorage {
    T values[kBlockThreads];
  };

  explicit BlockScan(TempStorage& temp) : temp_(temp) {
    if (emu::block_size() != kBlockThreads) __builtin_trap();  // CUB's BLOCK_DIM_X must be the block's size
  }

  void ExclusiveSum(T input, T& output) {
    T total;
    ExclusiveSum(input, output, total);
  }
  void ExclusiveSum(T input, T& output, T& block_aggregate) {
    const int rank = emu::thread_rank();
    temp_.values[rank] = input;
    __syncthreads();
    T before = T(0), total = T(0);
    for (int i = 0; i < kBlockThreads; ++i) {
      if (i == rank) before = total;
      total = total + temp_.values[i];
    }
    output = before;
    block_aggregate = total;
  }
  void InclusiveSum(T input, T& output) {
    T total;
    InclusiveSum(input, output, total);
  }
  void InclusiveSum(T input, T& output, T& block_aggregate) {
    ExclusiveSum(input, output, block_aggregate);
    output = output + input;
  }

 private:
  TempStorage& temp_;
};

}  // namespace cub
