// Linear layer on the GPU through cuBLASLt: out = x W^T, W [O, I] as in
// nn.Linear. Legend: N rows, I in features, O out features.
//
// Row-major to column-major: cuBLAS sees a row-major [R, C] buffer as the
// column-major C x R matrix (its transpose) with leading dimension C. So each
// row-major product P = X Y is computed as the column-major P^T = Y^T X^T,
// with no copies:
//   forward  out^T [O x N] = op_T(W as I x O) * (x as I x N)          m=O n=N k=I
//   dx       dx^T  [I x N] += (W as I x O) * (dout as O x N)           m=I n=N k=O
//   dw       dw^T  [I x O] += (x as I x N) * op_T(dout as O x N)       m=I n=O k=N
//
// Types: A and B share one dtype (BF16, or F32 when training in fp32); the
// GEMM computes in fp32 (CUBLAS_COMPUTE_32F: true fp32 products for F32
// inputs, no TF32) and writes D in the dtype of the output tensor. BF16
// inputs may write a BF16 or F32 output; F32 inputs write F32. dw is always
// F32 (fp32 master gradients): A/B = BF16 with C/D = F32 is one of cuBLASLt's
// supported combinations for CUBLAS_COMPUTE_32F.
//
// Each distinct GEMM (shape, transposes, dtypes, leading dimensions, pointer
// alignments) builds its descriptors and asks the heuristic once; the plan is
// kept in a process-wide map, so a training step re-uses the same few plans.
// All GEMMs run on stream() with the shared workspace (one stream, so one
// workspace is never used by two GEMMs at once). Nothing here synchronises,
// and nothing allocates device memory: these calls can be captured into a
// CUDA graph once every plan exists (run one step before capturing).
//
// Performance ideas, to be measured on a GPU: CUBLAS_COMPUTE_32F_FAST_TF32 for F32
// inputs (a config switch; tests would need a TF32 tolerance); ask the
// heuristic for several algos and time them once per plan; fuse bias or
// activation epilogues (CUBLASLT_EPILOGUE_*) where the model has them.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>

#include "src/kernels/cuda/cuda_check.h"
#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/stream.h"

namespace moe::cuda {
namespace {

// All dims but the last (also when the last is 0).
int64_t rows_of(const Tensor& t) {
  int64_t rows = 1;
  for (int d = 0; d + 1 < t.ndim; ++d) rows *= t.shape[d];
  return rows;
}

std::string describe(const Tensor& t) { return std::string(dtype_name(t.dtype)) + t.shape_string(); }

cudaDataType_t blas_type(DType t) {
  switch (t) {
    case DType::kF32: return CUDA_R_32F;
    case DType::kBF16: return CUDA_R_16BF;
    case DType::kI32: break;
  }
  throw std::logic_error("matmul: no cuBLASLt type for i32");
}

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
  int ab_type, cd_type;
  uint32_t align_a, align_b, align_c;

  auto tie() const {
    return std::tie(m, n, k, lda, ldb, ldc, transa, transb, ab_type, cd_type, align_a, align_b, align_c);
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
  const auto ab = static_cast<cudaDataType_t>(key.ab_type);
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
  check_blas(cublasLtMatrixLayoutCreate(&plan.a, ab, a_rows, a_cols, key.lda), what + " (layout A)");
  check_blas(cublasLtMatrixLayoutCreate(&plan.b, ab, b_rows, b_cols, key.ldb), what + " (layout B)");
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

template <typename Describe>
const GemmPlan& plan_for(const GemmKey& key, const Describe& what) {
  static std::mutex mutex;
  static std::map<GemmKey, GemmPlan> plans;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = plans.find(key);
  if (it == plans.end()) it = plans.emplace(key, make_plan(key, what())).first;
  return it->second;
}

// D = op(A) op(B) (+ D when accumulate), column-major, on stream(). what()
// names the op, tensors and dtypes; it runs only to build a plan or report
// an error, so the common call builds no strings.
template <typename Describe>
void gemm(const Describe& what, bool transa, bool transb, int64_t m, int64_t n, int64_t k, const void* A, int64_t lda,
          const void* B, int64_t ldb, DType ab, void* D, int64_t ldd, DType cd, bool accumulate) {
  GemmKey key;
  key.m = m, key.n = n, key.k = k, key.lda = lda, key.ldb = ldb, key.ldc = ldd;
  key.transa = transa, key.transb = transb;
  key.ab_type = blas_type(ab), key.cd_type = blas_type(cd);
  key.align_a = alignment_of(A), key.align_b = alignment_of(B), key.align_c = alignment_of(D);
  const GemmPlan& plan = plan_for(key, what);
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  const cublasStatus_t st =
      cublasLtMatmul(cublaslt(), plan.desc, &alpha, A, plan.a, B, plan.b, &beta, D, plan.c, D, plan.c, &plan.algo,
                     cublaslt_workspace(), cublaslt_workspace_bytes(), stream());
  if (st != CUBLAS_STATUS_SUCCESS) check_blas(st, what());
}

// Input dtypes all equal (BF16 or F32); an output is F32, or BF16 when the inputs are.
template <typename Describe>
void check_types(const char* op, const Describe& shapes, DType in, std::initializer_list<const Tensor*> inputs,
                 std::initializer_list<const Tensor*> outputs) {
  bool ok = in == DType::kBF16 || in == DType::kF32;
  for (const Tensor* t : inputs) ok = ok && t->dtype == in;
  for (const Tensor* t : outputs) {
    ok = ok && (t->dtype == DType::kF32 || (t->dtype == DType::kBF16 && in == DType::kBF16));
  }
  if (!ok) {
    throw std::logic_error(std::string(op) + ": unsupported dtypes " + shapes() +
                           " (inputs all bf16 or all f32; outputs f32, or bf16 for bf16 inputs)");
  }
}

void check_device(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts) {
    if (t->data != nullptr && t->device != Device::kCuda) {
      throw std::logic_error(std::string(op) + ": host tensor " + t->shape_string() + " passed to the CUDA backend");
    }
  }
}

}  // namespace

void matmul_forward(const Tensor& out_NO, const Tensor& x_NI, const Tensor& w_OI) {
  const int64_t N = rows_of(x_NI), I = w_OI.size(1), O = w_OI.size(0);
  const auto shapes = [&] { return describe(out_NO) + " = " + describe(x_NI) + " x " + describe(w_OI) + "^T"; };
  check_device("matmul_forward", {&out_NO, &x_NI, &w_OI});
  check_types("matmul_forward", shapes, x_NI.dtype, {&w_OI}, {&out_NO});
  if (N == 0 || O == 0) return;
  if (I == 0) {  // an empty sum: cuBLASLt rejects k = 0
    const cudaError_t st = cudaMemsetAsync(out_NO.data, 0, static_cast<size_t>(out_NO.bytes()), stream());
    if (st != cudaSuccess) check(st, "matmul_forward " + shapes() + " (zero fill)");
    return;
  }
  gemm([&] { return "matmul_forward " + shapes(); }, /*transa=*/true, /*transb=*/false, O, N, I, w_OI.data, I,
       x_NI.data, I, x_NI.dtype, out_NO.data, O, out_NO.dtype, /*accumulate=*/false);
}

void matmul_backward(const Tensor& dx_NI, const Tensor& dw_OI, const Tensor& dout_NO, const Tensor& x_NI,
                     const Tensor& w_OI, bool accumulate_dx) {
  const int64_t N = rows_of(x_NI), I = w_OI.size(1), O = w_OI.size(0);
  const auto shapes = [&] {
    return "dx " + (dx_NI.data ? describe(dx_NI) : std::string("(none)")) + ", dw " + describe(dw_OI) + ", dout " +
           describe(dout_NO) + ", x " + describe(x_NI) + ", w " + describe(w_OI);
  };
  check_device("matmul_backward", {&dx_NI, &dw_OI, &dout_NO, &x_NI, &w_OI});
  if (dx_NI.data != nullptr) {
    check_types("matmul_backward", shapes, x_NI.dtype, {&dout_NO, &w_OI}, {&dx_NI});
  } else {
    check_types("matmul_backward", shapes, x_NI.dtype, {&dout_NO, &w_OI}, {});
  }
  if (dw_OI.dtype != DType::kF32) {
    throw std::logic_error("matmul_backward: dw must be f32 (fp32 master gradients): " + shapes());
  }
  if (N == 0 || I == 0 || O == 0) return;
  if (dx_NI.data != nullptr) {
    gemm(
        [&] {
          return (accumulate_dx ? "matmul_backward (dx += dout W) " : "matmul_backward (dx = dout W) ") + shapes();
        },
        false, false, I, N, O, w_OI.data, I, dout_NO.data, O, x_NI.dtype, dx_NI.data, I, dx_NI.dtype, accumulate_dx);
  }
  gemm([&] { return "matmul_backward (dw += dout^T x) " + shapes(); }, false, true, I, O, N, x_NI.data, I, dout_NO.data,
       O, x_NI.dtype, dw_OI.data, I, DType::kF32, /*accumulate=*/true);
}

}  // namespace moe::cuda
