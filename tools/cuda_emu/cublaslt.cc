// The CUDA emulator's cuBLASLt (see include/cublasLt.h).
#include <cblas.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "src/core/fp8.h"
#include "tools/cuda_emu/device_memory.h"
#include "tools/cuda_emu/include/cublasLt.h"
#include "tools/cuda_emu/include/cuda_bf16.h"
#include "tools/cuda_emu/runtime_internal.h"

struct cublasLtContext {};
struct cublasLtMatmulDescOpaque_t {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
  const float* a_scale = nullptr;  // device pointers, read when the GEMM runs
  const float* b_scale = nullptr;
};
struct cublasLtMatrixLayoutOpaque_t {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};
struct cublasLtMatmulPreferenceOpaque_t {};

namespace {

cublasStatus_t invalid(const std::string& why) {
  std::fprintf(stderr, "cuda_emu: cuBLASLt: %s\n", why.c_str());
  return CUBLAS_STATUS_INVALID_VALUE;
}

bool is_fp8(cudaDataType_t t) { return t == CUDA_R_8F_E4M3 || t == CUDA_R_8F_E5M2; }

size_t element_bytes(cudaDataType_t t) { return is_fp8(t) ? 1 : t == CUDA_R_16BF ? 2 : 4; }

// Bytes a column-major matrix spans from its first element.
size_t span_bytes(const cublasLtMatrixLayoutOpaque_t& l) {
  if (l.rows == 0 || l.cols == 0) return 0;
  return (static_cast<size_t>(l.ld) * (l.cols - 1) + l.rows) * element_bytes(l.type);
}

// The stored matrix widened to fp32, same layout.
std::vector<float> widen(const void* p, const cublasLtMatrixLayoutOpaque_t& l) {
  const size_t n = span_bytes(l) / element_bytes(l.type);
  std::vector<float> out(n);
  if (l.type == CUDA_R_32F) {
    std::memcpy(out.data(), p, n * 4);
  } else if (is_fp8(l.type)) {
    const auto f = l.type == CUDA_R_8F_E4M3 ? moe::fp8::Format::kE4M3 : moe::fp8::Format::kE5M2;
    const auto* c = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) out[i] = moe::fp8::decode(c[i], f);
  } else {
    const auto* h = static_cast<const __nv_bfloat16*>(p);
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(h[i]);
  }
  return out;
}

cublasStatus_t check_shapes(const cublasLtMatmulDescOpaque_t& desc, const cublasLtMatrixLayoutOpaque_t& a,
                            const cublasLtMatrixLayoutOpaque_t& b, const cublasLtMatrixLayoutOpaque_t& c,
                            const cublasLtMatrixLayoutOpaque_t& d) {
  for (const auto* l : {&a, &b, &c, &d}) {
    if (l->ld < static_cast<int64_t>(l->rows) || l->ld < 1) {
      return invalid("leading dimension " + std::to_string(l->ld) + " < rows " + std::to_string(l->rows));
    }
  }
  const uint64_t m = d.rows, n = d.cols;
  const uint64_t k = desc.transa == CUBLAS_OP_N ? a.cols : a.rows;
  const uint64_t a_m = desc.transa == CUBLAS_OP_N ? a.rows : a.cols;
  const uint64_t b_k = desc.transb == CUBLAS_OP_N ? b.rows : b.cols;
  const uint64_t b_n = desc.transb == CUBLAS_OP_N ? b.cols : b.rows;
  if (a_m != m || b_n != n || b_k != k || c.rows != m || c.cols != n) {
    return invalid("shapes do not chain: op(A) " + std::to_string(a_m) + "x" + std::to_string(k) + ", op(B) " +
                   std::to_string(b_k) + "x" + std::to_string(b_n) + ", D " + std::to_string(m) + "x" +
                   std::to_string(n));
  }
  if (desc.compute != CUBLAS_COMPUTE_32F && desc.compute != CUBLAS_COMPUTE_32F_FAST_TF32) {
    return invalid("compute type not emulated");
  }
  if (is_fp8(a.type) || is_fp8(b.type)) {
    // FP8: sm_89 or newer, both operands FP8 but not both E5M2, A transposed and B not, k and
    // the operands' leading dimensions multiples of 16; D bf16 or f32.
    const bool ok = emu::compute_capability() >= 89 && is_fp8(a.type) && is_fp8(b.type) &&
                    !(a.type == CUDA_R_8F_E5M2 && b.type == CUDA_R_8F_E5M2) && desc.transa == CUBLAS_OP_T &&
                    desc.transb == CUBLAS_OP_N && k % 16 == 0 && a.ld % 16 == 0 && b.ld % 16 == 0 && c.type == d.type &&
                    (d.type == CUDA_R_32F || d.type == CUDA_R_16BF) && desc.compute == CUBLAS_COMPUTE_32F &&
                    desc.scale == CUDA_R_32F;
    return ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
  }
  const bool inputs_ok = a.type == b.type;
  const bool outputs_ok =
      c.type == d.type && (d.type == CUDA_R_32F || (d.type == CUDA_R_16BF && a.type == CUDA_R_16BF));
  if (!inputs_ok || !outputs_ok || desc.scale != CUDA_R_32F) {
    return CUBLAS_STATUS_NOT_SUPPORTED;  // as cuBLASLt answers an unsupported type combination
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

const char* cublasLtGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasLtGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
  }
  return "unknown status";
}

size_t cublasLtGetVersion() { return CUBLAS_VERSION; }

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  *handle = new cublasLtContext;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale) {
  *desc = new cublasLtMatmulDescOpaque_t{compute, scale};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* value, size_t bytes) {
  if (attr == CUBLASLT_MATMUL_DESC_A_SCALE_POINTER || attr == CUBLASLT_MATMUL_DESC_B_SCALE_POINTER) {
    if (bytes != sizeof(const float*)) return invalid("scale pointer attribute of the wrong size");
    std::memcpy(attr == CUBLASLT_MATMUL_DESC_A_SCALE_POINTER ? &desc->a_scale : &desc->b_scale, value, bytes);
    return CUBLAS_STATUS_SUCCESS;
  }
  if (bytes != sizeof(cublasOperation_t)) return invalid("matmul desc attribute of the wrong size");
  cublasOperation_t op;
  std::memcpy(&op, value, sizeof op);
  if (attr == CUBLASLT_MATMUL_DESC_TRANSA) {
    desc->transa = op;
  } else if (attr == CUBLASLT_MATMUL_DESC_TRANSB) {
    desc->transb = op;
  } else {
    return invalid("matmul desc attribute not emulated");
  }
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (type != CUDA_R_32F && type != CUDA_R_16BF && !is_fp8(type)) return invalid("matrix type not emulated");
  *layout = new cublasLtMatrixLayoutOpaque_t{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  *pref = new cublasLtMatmulPreferenceOpaque_t;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t,
                                                    const void*, size_t) {
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t d, cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t* results, int* found) {
  *found = 0;
  if (requested < 1) return invalid("heuristic asked for no result");
  if (const cublasStatus_t s = check_shapes(*desc, *a, *b, *c, *d); s != CUBLAS_STATUS_SUCCESS) return s;
  results[0] = cublasLtMatmulHeuristicResult_t{};
  results[0].state = CUBLAS_STATUS_SUCCESS;
  *found = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t a, const void* B, cublasLtMatrixLayout_t b, const void* beta,
                              const void* C, cublasLtMatrixLayout_t c, void* D, cublasLtMatrixLayout_t d,
                              const cublasLtMatmulAlgo_t*, void*, size_t, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (const cublasStatus_t s = check_shapes(*desc, *a, *b, *c, *d); s != CUBLAS_STATUS_SUCCESS) return s;
  const std::pair<const void*, const cublasLtMatrixLayoutOpaque_t*> operands[] = {{A, a}, {B, b}, {C, c}, {D, d}};
  for (const auto& [p, l] : operands) {
    if (span_bytes(*l) > 0 && !emu::is_device_range(p, span_bytes(*l))) {
      return invalid("a matrix is not inside device memory: " + emu::describe_address(p, span_bytes(*l)));
    }
    if (is_fp8(l->type) && reinterpret_cast<uintptr_t>(p) % 16 != 0) {
      return invalid("an FP8 matrix is not 16-byte aligned: " + emu::describe_address(p, span_bytes(*l)));
    }
  }
  for (const float* scale : {desc->a_scale, desc->b_scale}) {
    if (scale != nullptr && !emu::is_device_range(scale, sizeof(float))) {
      return invalid("a scale is not inside device memory: " + emu::describe_address(scale, sizeof(float)));
    }
  }
  float al, be;
  std::memcpy(&al, alpha, 4);  // host scalars, read at the call as cuBLASLt does
  std::memcpy(&be, beta, 4);
  const cublasLtMatmulDescOpaque_t ds = *desc;
  const cublasLtMatrixLayoutOpaque_t la = *a, lb = *b, lc = *c, ld = *d;
  const cudaError_t e = emu::enqueue(
      stream,
      [=] {
        const int m = static_cast<int>(ld.rows), n = static_cast<int>(ld.cols);
        const int k = static_cast<int>(ds.transa == CUBLAS_OP_N ? la.cols : la.rows);
        if (m == 0 || n == 0) return;
        // fp32 D (ld m) starts as beta C, then gets alpha op(A) op(B) added.
        std::vector<float> out(static_cast<size_t>(m) * n, 0.0f);
        if (be != 0.0f) {
          const std::vector<float> cw = widen(C, lc);
          for (int j = 0; j < n; ++j)
            for (int i = 0; i < m; ++i)
              out[static_cast<size_t>(j) * m + i] = be * cw[static_cast<size_t>(j) * lc.ld + i];
        }
        if (k > 0) {
          // The scales as the GEMM runs (a kernel before it may have written them).
          const float scaled_alpha = al * (ds.a_scale ? *ds.a_scale : 1.0f) * (ds.b_scale ? *ds.b_scale : 1.0f);
          const std::vector<float> aw = widen(A, la), bw = widen(B, lb);
          cblas_sgemm(CblasColMajor, ds.transa == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                      ds.transb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, scaled_alpha, aw.data(),
                      static_cast<int>(la.ld), bw.data(), static_cast<int>(lb.ld), 1.0f, out.data(), m);
        }
        for (int j = 0; j < n; ++j)
          for (int i = 0; i < m; ++i) {
            const float v = out[static_cast<size_t>(j) * m + i];
            const size_t at = static_cast<size_t>(j) * ld.ld + i;
            if (ld.type == CUDA_R_32F) {
              static_cast<float*>(D)[at] = v;
            } else {
              static_cast<__nv_bfloat16*>(D)[at] = __nv_bfloat16(v);
            }
          }
      },
      "cublasLtMatmul");
  return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}
