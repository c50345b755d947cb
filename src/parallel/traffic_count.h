// What each collective of a group moved: a Communicator wrapper that counts
// calls and payload bytes as they are issued. The mesh wraps every group with
// it, so a run (and a test) can hold the --dry-run plan of the communication
// (train/comm_plan.h) to the bytes really sent.
// Payload: all_reduce and broadcast the tensor; all_gather its output (the
// whole gathered tensor); reduce_scatter its input (the whole tensor before
// the scatter); all_to_all_v the rows this rank sends, its own included;
// send_recv what this rank sends (a call with no send counts no call).
// A group of one rank counts nothing.
#pragma once

#include <cstdint>
#include <memory>

#include "src/parallel/communicator.h"

namespace moe {

struct CollectiveTraffic {
  int64_t calls = 0;
  int64_t bytes = 0;
};

struct GroupTraffic {
  CollectiveTraffic all_reduce, all_gather, reduce_scatter, broadcast, all_to_all, send;
};

// Counts into `*counts` (which must outlive the result); groups split from
// the result are not counted.
std::unique_ptr<Communicator> with_traffic_count(std::unique_ptr<Communicator> inner, GroupTraffic* counts);

}  // namespace moe
