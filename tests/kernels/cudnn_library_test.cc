// cuDNN is opened at run time, like cuBLASLt and NCCL: the calls of cuDNN's
// frontend reach libcudnn.so.9 through third_party/cuda/cuda_libraries.cc.
// These calls need no GPU, so the binding is checked wherever the toolkit has
// cuDNN; the attention path itself runs in check-gpu on a GPU.
#include <cudnn.h>

#include <catch2/catch.hpp>
#include <string>

#include "src/kernels/cuda/cudnn_attention.h"
#include "third_party/cuda/cuda_libraries.h"

TEST_CASE("libcudnn.so.9 is found and its calls reach it") {
  const int64_t version = moe::cuda_libraries::cudnn_version();
  INFO("cudnn_found: " << moe::cuda_libraries::cudnn_found());
  REQUIRE(version >= 90000);
  CHECK(static_cast<int64_t>(cudnnGetVersion()) == version);  // through the forwarding call
  CHECK(std::string(cudnnGetErrorString(CUDNN_STATUS_NOT_SUPPORTED)) == "CUDNN_STATUS_NOT_SUPPORTED");
  CHECK(moe::cuda_libraries::cudnn_found().find("libcudnn.so.9") != std::string::npos);
}

TEST_CASE("the attention path is in this build and reports the loaded cuDNN") {
  CHECK(moe::cuda::cudnn_attention::in_build());
  CHECK(moe::cuda::cudnn_attention::loaded_version() == moe::cuda_libraries::cudnn_version());
}
