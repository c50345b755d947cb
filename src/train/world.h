// The communicator a run trains over: one process alone, MPI across ranks,
// and on GPUs MPI for host tensors plus NCCL for device tensors
// (HostDeviceCommunicator), on this rank's GPU.
#pragma once

#include <memory>

#include "src/config/derived.h"
#include "src/parallel/communicator.h"
#include "src/train/placement.h"

namespace moe {

// Starts MPI when the layout has more than one rank, and refuses a rank count
// that differs from the layout's (UserError). On GPUs it selects this rank's
// GPU first (by local rank): NCCL binds a group to the current device.
std::unique_ptr<Communicator> make_world(const Layout& layout, const Placement& where);

}  // namespace moe
