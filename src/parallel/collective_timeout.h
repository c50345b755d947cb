// Hangs become errors: a Communicator wrapper that times every collective.
// A watchdog thread (one per process) watches the collective in flight; if it
// has not finished within the timeout — a peer died, or is stuck, or took a
// different path — the rank logs which group and operation it was waiting in
// and aborts the whole job, instead of hanging until the Slurm time limit.
#pragma once

#include <memory>
#include <string>

#include "src/parallel/communicator.h"

namespace moe {

constexpr int kCollectiveTimeoutExitCode = 4;

// `group` names the communicator in the message ("world", "tp", "ep", ...);
// groups split from the result are timed too, named "<group>/split".
std::unique_ptr<Communicator> with_collective_timeout(std::unique_ptr<Communicator> inner, double timeout_s,
                                                      const std::string& group);

}  // namespace moe
