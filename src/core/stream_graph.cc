#include "src/core/stream_graph.h"

#include <stdexcept>
#include <string>

#if MOE_TRAIN_HAS_CUDA
#include <cuda_runtime.h>

#include "src/core/cuda_stream.h"
#endif

namespace moe {
namespace {

int graphs_alive = 0;  // one host thread drives the backend

}  // namespace

int StreamGraph::alive() { return graphs_alive; }

#if MOE_TRAIN_HAS_CUDA
namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA graph: ") + what + ": " + cudaGetErrorString(status) +
                             " (an op in the captured work synchronised, allocated or talked to another rank)");
  }
}

}  // namespace

StreamGraph::~StreamGraph() {
  if (exec_) {
    cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
    --graphs_alive;
  }
  if (graph_) cudaGraphDestroy(static_cast<cudaGraph_t>(graph_));
}

void StreamGraph::capture(const std::function<void()>& work) {
  if (captured()) throw std::logic_error("StreamGraph::capture: already captured");
  cudaStream_t s = cuda::stream();
  check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  try {
    work();
  } catch (...) {
    cudaGraph_t abandoned = nullptr;
    cudaStreamEndCapture(s, &abandoned);  // leaves the stream usable
    if (abandoned) cudaGraphDestroy(abandoned);
    throw;
  }
  cudaGraph_t graph = nullptr;
  check(cudaStreamEndCapture(s, &graph), "cudaStreamEndCapture");
  graph_ = graph;
  cudaGraphExec_t exec = nullptr;
  check(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
  exec_ = exec;
  ++graphs_alive;
}

void StreamGraph::replay() {
  if (!captured()) throw std::logic_error("StreamGraph::replay: nothing captured");
  check(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), cuda::stream()), "cudaGraphLaunch");
}
#else
StreamGraph::~StreamGraph() = default;
void StreamGraph::capture(const std::function<void()>&) {
  throw std::logic_error("StreamGraph::capture: this build has no CUDA");
}
void StreamGraph::replay() { throw std::logic_error("StreamGraph::replay: this build has no CUDA"); }
#endif

}  // namespace moe
