// One cuBLASLt GEMM, column-major, for the linear layers (matmul.cu) and
// their FP8 variant (fp8_matmul.cu):
//   D = scale_a scale_b op(A) op(B)   (+ D when accumulating),
// computed in fp32 (CUBLAS_COMPUTE_32F: true fp32 products for F32 inputs, no
// TF32). scale_a and scale_b are device floats (FP8 inputs' dequantisation
// factors) or null for 1.
//
// Each distinct GEMM (shape, transposes, types, leading dimensions, pointer
// alignments) builds its descriptors and asks the heuristic once; the plan is
// kept in a process-wide map, so a training step re-uses the same few plans.
// All GEMMs run on stream() with the shared workspace (one stream, so one
// workspace is never used by two GEMMs at once). Nothing here synchronises,
// and nothing allocates device memory: these calls can be captured into a
// CUDA graph once every plan exists (run one step before capturing).
//
// For nvcc-compiled sources only (it names cuBLASLt's types).
#pragma once

#include <cublasLt.h>

#include <cstdint>
#include <functional>
#include <string>

#include "src/core/tensor.h"

namespace moe::cuda {

// A matrix as stored: column-major, `ld` elements between columns.
struct LtMatrix {
  const void* data;
  cudaDataType_t type;
  int64_t ld;
  const float* scale = nullptr;  // device; A's or B's dequantisation factor
};

cudaDataType_t blas_type(DType t);

// what() names the op, tensors and dtypes; it runs only to build a plan or
// report an error, so the common call builds no strings. Throws naming it
// when cuBLASLt has no kernel for the combination or fails.
void lt_gemm(const std::function<std::string()>& what, bool transa, bool transb, int64_t m, int64_t n, int64_t k,
             const LtMatrix& a, const LtMatrix& b, void* d, int64_t ldd, cudaDataType_t d_type, bool accumulate);

}  // namespace moe::cuda
