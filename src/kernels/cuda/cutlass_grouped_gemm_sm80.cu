// CUTLASS 2 grouped GEMMs for the experts on sm_80 (cutlass_grouped_gemm.h;
// the products and their operands: cutlass_grouped_common.cuh). Compiled for
// sm_80 alone; its code runs on every sm_8x GPU (A100, A10, L4, RTX 30/40),
// and the kernel choice (src/kernels/kernel_choice.h) sends those here.
//
// Against the builtin grouped GEMM (WMMA, 64 x 64 x 32 tiles, one stage), it
// has 128 x 128 x 32 tiles computed by four 64 x 64 warp tiles of mma.sync,
// fed by a four-stage cp.async pipeline (64 KiB of shared memory: two CTAs per
// SM on an A100, one on sm_86/89), and a persistent grid that walks every
// expert's tiles, reading the sizes on the device.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cutlass/cutlass.h"
#include "cutlass/epilogue/thread/linear_combination.h"
#include "cutlass/gemm/device/gemm_grouped.h"
#include "cutlass/gemm/kernel/default_gemm_grouped.h"
#include "src/kernels/cuda/cutlass_grouped_arch.h"
#include "src/kernels/cuda/cutlass_grouped_common.cuh"

namespace moe::cuda::cutlass_grouped {
namespace {

using Bf16 = cutlass::bfloat16_t;
using RowMajor = cutlass::layout::RowMajor;
using ColumnMajor = cutlass::layout::ColumnMajor;

// One grouped GEMM: bf16 A and B (16-byte accesses), fp32 accumulation, D of
// ElementD, the problems scheduled on the device.
template <class LayoutA, class LayoutB, class ElementD>
struct Sm80GroupedGemm {
  static constexpr int kAlignAB = 128 / cutlass::sizeof_bits<Bf16>::value;
  static constexpr int kAlignD = 128 / cutlass::sizeof_bits<ElementD>::value;
  using Epilogue = cutlass::epilogue::thread::LinearCombination<ElementD, kAlignD, float, float>;
  using Kernel = typename cutlass::gemm::kernel::DefaultGemmGrouped<
      Bf16, LayoutA, cutlass::ComplexTransform::kNone, kAlignAB, Bf16, LayoutB, cutlass::ComplexTransform::kNone,
      kAlignAB, ElementD, RowMajor, float, cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
      cutlass::gemm::GemmShape<128, 128, 32>, cutlass::gemm::GemmShape<64, 64, 32>, cutlass::gemm::GemmShape<16, 8, 16>,
      Epilogue, cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<1>, 4,
      cutlass::gemm::kernel::GroupScheduleMode::kDeviceOnly>::GemmKernel;
  using Gemm = cutlass::gemm::device::GemmGrouped<Kernel>;
  using D = ElementD;
};

using Forward = Sm80GroupedGemm<RowMajor, RowMajor, Bf16>;
using InputGrad = Sm80GroupedGemm<RowMajor, ColumnMajor, Bf16>;
using WeightGrad = Sm80GroupedGemm<ColumnMajor, RowMajor, float>;

// Each group's problem and pointers from the device offsets, one thread per
// expert: what makes the launch sync-free.
template <class ElementD>
__global__ void fill_groups(Product product, const int32_t* offsets, int experts, int64_t M, int64_t I, int64_t O,
                            const Bf16* a_base, const Bf16* b_base, ElementD* d_base, cutlass::gemm::GemmCoord* shapes,
                            Bf16** a, Bf16** b, ElementD** c, ElementD** d) {
  const int e = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (e >= experts) return;
  const GroupSlice s = group_slice(product, offsets, e, M, I, O);
  shapes[e] = cutlass::gemm::GemmCoord(s.m, s.n, s.k);
  // CUTLASS 2's arguments take non-const operand pointers; it only reads A and B.
  a[e] = const_cast<Bf16*>(a_base + s.a);
  b[e] = const_cast<Bf16*>(b_base + s.b);
  d[e] = d_base + s.d;
  c[e] = d[e];
}

// The device arrays of one product at one shape and the CUTLASS kernel
// initialised on them, once; each call refills the arrays and launches.
template <class G>
class Plan {
 public:
  Plan(Product product, int experts, int64_t I, int64_t O) : product_(product), experts_(experts), I_(I), O_(O) {
    const std::string what = "CUTLASS grouped GEMM plan";
    const size_t E = static_cast<size_t>(experts);
    check(cudaMalloc(&shapes_, E * sizeof(cutlass::gemm::GemmCoord)), what);
    check(cudaMalloc(&a_, E * sizeof(void*)), what);
    check(cudaMalloc(&b_, E * sizeof(void*)), what);
    check(cudaMalloc(&c_, E * sizeof(void*)), what);
    check(cudaMalloc(&d_, E * sizeof(void*)), what);
    // Leading dimensions, the same for every group: upload once.
    const LeadingDims ld = leading_dims(product, I, O);
    upload(&lda_, ld.a, what);
    upload(&ldb_, ld.b, what);
    upload(&ldd_, ld.d, what);

    // A persistent grid: one full wave of CTAs, each walking the tiles of
    // every expert in turn (the sizes are read on the device).
    const int ctas = G::Gemm::sufficient();
    if (ctas <= 0) throw std::runtime_error("CUTLASS grouped GEMM: no CTA fits on this GPU");
    typename G::Gemm::Arguments args(shapes_, experts, ctas,
                                     {1.0f, product == Product::kForward ? 0.0f : 1.0f},  // dx and dW accumulate
                                     a_, b_, c_, d_, lda_, ldb_, ldd_, ldd_);
    if (G::Gemm::can_implement(args) != cutlass::Status::kSuccess) {
      throw std::runtime_error("CUTLASS grouped GEMM cannot run I=" + std::to_string(I) + " O=" + std::to_string(O));
    }
    if (gemm_.initialize(args, nullptr, stream()) != cutlass::Status::kSuccess) {
      throw std::runtime_error("CUTLASS grouped GEMM: initialize failed");
    }
  }

  void run(const int32_t* offsets, int64_t M, const Bf16* a_base, const Bf16* b_base, typename G::D* d_base,
           const std::string& what) {
    fill_groups<typename G::D><<<(experts_ + 127) / 128, 128, 0, stream()>>>(
        product_, offsets, experts_, M, I_, O_, a_base, b_base, d_base, shapes_, a_, b_, c_, d_);
    check(cudaGetLastError(), what + " (groups)");
    if (gemm_.run(stream()) != cutlass::Status::kSuccess) throw std::runtime_error(what + ": CUTLASS launch failed");
    check(cudaGetLastError(), what);
  }

 private:
  void upload(int64_t** dst, int64_t value, const std::string& what) {
    const std::vector<int64_t> host(static_cast<size_t>(experts_), value);
    check(cudaMalloc(dst, host.size() * sizeof(int64_t)), what);
    check(cudaMemcpy(*dst, host.data(), host.size() * sizeof(int64_t), cudaMemcpyHostToDevice), what);
  }

  Product product_;
  int experts_;
  int64_t I_, O_;
  cutlass::gemm::GemmCoord* shapes_ = nullptr;
  Bf16** a_ = nullptr;
  Bf16** b_ = nullptr;
  typename G::D** c_ = nullptr;
  typename G::D** d_ = nullptr;
  int64_t* lda_ = nullptr;
  int64_t* ldb_ = nullptr;
  int64_t* ldd_ = nullptr;
  typename G::Gemm gemm_;
};

}  // namespace

ArchGemms& sm80_gemms() {
  static GroupedGemms<Plan<Forward>, Plan<InputGrad>, Plan<WeightGrad>> gemms;
  return gemms;
}

}  // namespace moe::cuda::cutlass_grouped
