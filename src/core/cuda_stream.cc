#include "src/core/cuda_stream.h"

#include <stdexcept>
#include <string>

namespace moe::cuda {

cudaStream_t stream() {
  static const cudaStream_t s = [] {
    cudaStream_t created = nullptr;
    const cudaError_t status = cudaStreamCreateWithFlags(&created, cudaStreamNonBlocking);
    if (status != cudaSuccess) {
      throw std::runtime_error(std::string("CUDA error in cudaStreamCreate (the backend's stream): ") +
                               cudaGetErrorString(status));
    }
    return created;
  }();
  return s;
}

}  // namespace moe::cuda
