// cuBLASLt GEMMs with cached plans (cublaslt_gemm.h).
#include "src/kernels/cuda/cublaslt_gemm.h"

#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "src/kernels/cuda/cuda_check.h"
#include "src/kernels/cuda/stream.h"

namespace moe::cuda {

cudaDataType_t blas_type(DType t) {
  switch (t) {
    case DType::kF32: return CUDA_R_32F;
    case DType::kBF16: return CUDA_R_16BF;
    case DType::kI32: break;
  }
  throw std::logic_error("matmul: no cuBLASLt type for i32");
}

namespace {

void check_blas(cublasStatus_t status, const std::string& what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw std::runtime_error("cuBLASLt error in " + what + ": " + cublasLtGetStatusName(status) + " (" +
                             cublasLtGetStatusString(status) + ")");
  }
}

// The largest power of two (up to 256) that divides the address: cuBLASLt's
// heuristic must only offer kernels that can read these pointers (row views
// of a buffer need not be 256-byte aligned, cuBLASLt's default assumption).
uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && (a % align) != 0) align /= 2;
  return align;
}

// One column-major GEMM D = alpha op(A) op(B) + beta C with C == D.
struct GemmKey {
  int64_t m, n, k, lda, ldb, ldc;
  int transa, transb;
  int a_type, b_type, cd_type;
  uint32_t align_a, align_b, align_c;

  auto tie() const {
    return std::tie(m, n, k, lda, ldb, ldc, transa, transb, a_type, b_type, cd_type, align_a, align_b, align_c);
  }
  bool operator<(const GemmKey& o) const { return tie() < o.tie(); }
};

struct GemmPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

// Descriptors live as long as the process (a handful per model): never freed.
GemmPlan make_plan(const GemmKey& key, const std::string& what) {
  GemmPlan plan;
  const auto cd = static_cast<cudaDataType_t>(key.cd_type);
  check_blas(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), what + " (matmul desc)");
  const cublasOperation_t ta = key.transa ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = key.transb ? CUBLAS_OP_T : CUBLAS_OP_N;
  check_blas(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)),
             what + " (transa)");
  check_blas(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)),
             what + " (transb)");
  // Layouts describe the matrices as stored (before op): op = T stores k x m.
  const uint64_t a_rows = key.transa ? key.k : key.m, a_cols = key.transa ? key.m : key.k;
  const uint64_t b_rows = key.transb ? key.n : key.k, b_cols = key.transb ? key.k : key.n;
  check_blas(cublasLtMatrixLayoutCreate(&plan.a, static_cast<cudaDataType_t>(key.a_type), a_rows, a_cols, key.lda),
             what + " (layout A)");
  check_blas(cublasLtMatrixLayoutCreate(&plan.b, static_cast<cudaDataType_t>(key.b_type), b_rows, b_cols, key.ldb),
             what + " (layout B)");
  check_blas(cublasLtMatrixLayoutCreate(&plan.c, cd, key.m, key.n, key.ldc), what + " (layout C/D)");

  cublasLtMatmulPreference_t pref = nullptr;
  check_blas(cublasLtMatmulPreferenceCreate(&pref), what + " (preference)");
  const uint64_t workspace = cublaslt_workspace_bytes();
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                           sizeof(workspace));
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c},
  };
  for (const auto& [attr, value] : aligns) {
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value));
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS) {
    st =
        cublasLtMatmulAlgoGetHeuristic(cublaslt(), plan.desc, plan.a, plan.b, plan.c, plan.c, pref, 1, &result, &found);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  check_blas(st, what + " (heuristic)");
  if (found == 0) {
    throw std::runtime_error("cuBLASLt has no algorithm for " + what + " (workspace " + std::to_string(workspace) +
                             " bytes, pointer alignments " + std::to_string(key.align_a) + "/" +
                             std::to_string(key.align_b) + "/" + std::to_string(key.align_c) + " bytes)");
  }
  plan.algo = result.algo;
  return plan;
}

const GemmPlan& plan_for(const GemmKey& key, const std::function<std::string()>& what) {
  static std::mutex mutex;
  static std::map<GemmKey, GemmPlan> plans;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = plans.find(key);
  if (it == plans.end()) it = plans.emplace(key, make_plan(key, what())).first;
  return it->second;
}

}  // namespace

void lt_gemm(const std::function<std::string()>& what, bool transa, bool transb, int64_t m, int64_t n, int64_t k,
             const LtMatrix& a, const LtMatrix& b, void* d, int64_t ldd, cudaDataType_t d_type, bool accumulate) {
  GemmKey key;
  key.m = m, key.n = n, key.k = k, key.lda = a.ld, key.ldb = b.ld, key.ldc = ldd;
  key.transa = transa, key.transb = transb;
  key.a_type = a.type, key.b_type = b.type, key.cd_type = d_type;
  key.align_a = alignment_of(a.data), key.align_b = alignment_of(b.data), key.align_c = alignment_of(d);
  const GemmPlan& plan = plan_for(key, what);
  // Scale pointers are per call (a plan may serve several FP8 GEMMs); unset is 1.
  const std::pair<cublasLtMatmulDescAttributes_t, const float*> scales[] = {
      {CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, a.scale}, {CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, b.scale}};
  for (const auto& [attr, pointer] : scales) {
    if (pointer == nullptr) continue;
    const cublasStatus_t set = cublasLtMatmulDescSetAttribute(plan.desc, attr, &pointer, sizeof(pointer));
    if (set != CUBLAS_STATUS_SUCCESS) check_blas(set, what() + " (scale)");  // the name is built on failure only
  }
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  const cublasStatus_t st =
      cublasLtMatmul(cublaslt(), plan.desc, &alpha, a.data, plan.a, b.data, plan.b, &beta, d, plan.c, d, plan.c,
                     &plan.algo, cublaslt_workspace(), cublaslt_workspace_bytes(), stream());
  if (st != CUBLAS_STATUS_SUCCESS) check_blas(st, what());
}

}  // namespace moe::cuda
