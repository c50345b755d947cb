// The work a piece of code enqueues on the backend's stream, captured once as
// a CUDA graph and replayed as one launch: the host no longer pays a launch
// per kernel. Used for a micro-batch's forward and backward, which enqueue
// kernels, memsets and device-to-device copies only, read nothing back and
// allocate nothing once warm. Anything else inside a capture (a host sync, a
// cudaMalloc, a collective) makes capture() throw, naming the CUDA error.
// Only in CUDA builds; elsewhere capture() throws std::logic_error.
#pragma once

#include <functional>

namespace moe {

class StreamGraph {
 public:
  StreamGraph() = default;
  ~StreamGraph();
  StreamGraph(const StreamGraph&) = delete;
  StreamGraph& operator=(const StreamGraph&) = delete;

  bool captured() const { return exec_ != nullptr; }
  // Graphs captured and not yet destroyed in this process. While any is
  // alive, device buffers whose address a graph may hold must not move
  // (src/kernels/cuda/device_scratch.h).
  static int alive();
  // Records what `work` enqueues (it does not run) and instantiates the graph.
  void capture(const std::function<void()>& work);
  // One launch of the whole graph on the backend's stream.
  void replay();

 private:
  void* graph_ = nullptr;  // cudaGraph_t
  void* exec_ = nullptr;   // cudaGraphExec_t
};

}  // namespace moe
