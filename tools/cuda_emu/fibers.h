// The CUDA emulator's block scheduler: runs one thread block's threads as
// fibers on the calling host thread (see include/emu/device.h for the model).
#pragma once

#include <functional>
#include <string>

#include "tools/cuda_emu/include/cuda_runtime.h"

namespace emu {

// Runs every thread of block `block_idx` to completion. Returns an empty
// string, or what went wrong (a barrier some threads never reach).
std::string run_block(dim3 block_idx, dim3 grid, dim3 block, unsigned char* dynamic_shared,
                      const std::function<void()>& thread_main);

}  // namespace emu
