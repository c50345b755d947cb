// The pinned header-only NVIDIA packages (scripts/fetch_vendor_headers.sh)
// are the ones the build compiles against, and they compile with this
// toolkit's CUDA and cuDNN headers: cuDNN's C++ graph API 1.16.0 over cuDNN 9,
// CUTLASS 4.2.0.
#include <catch2/catch.hpp>

#include <cudnn_frontend.h>
#include <cutlass/gemm_coord.h>
#include <cutlass/version.h>

TEST_CASE("the pinned cuDNN frontend and CUTLASS headers, over cuDNN 9") {
  CHECK(CUDNN_FRONTEND_MAJOR_VERSION == 1);
  CHECK(CUDNN_FRONTEND_MINOR_VERSION == 16);
  CHECK(CUDNN_FRONTEND_PATCH_VERSION == 0);
  CHECK(CUTLASS_MAJOR == 4);
  CHECK(CUTLASS_MINOR == 2);
  CHECK(CUDNN_MAJOR == 9);
  // The graph API's SDPA and CUTLASS's grouped-GEMM problem types are there to build on.
  static_assert(sizeof(cudnn_frontend::graph::SDPA_attributes) > 0);
  static_assert(sizeof(cutlass::gemm::GemmCoord) == 3 * sizeof(int));
}
