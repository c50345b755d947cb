// The CUDA emulator's cub::BlockScan: the exclusive sums the kernels ask for, over the
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
    if (emu::block_size() != kBlockThreads) emu::fail_block("cub::BlockScan: BLOCK_DIM_X is not the block's size");
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

 private:
  TempStorage& temp_;
};

}  // namespace cub
