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

// One product's plan at one shape: its group arrays and the CUTLASS kernel
// initialised on them, once; each call refills the arrays and launches.
template <class G>
class Plan {
 public:
  Plan(Product product, int experts, int64_t I, int64_t O) : groups_(product, experts, I, O) {
    const std::string what = "CUTLASS grouped GEMM plan";
    // Leading dimensions, the same for every group: upload once.
    const LeadingDims ld = leading_dims(product, I, O);
    lda_ = upload_copies(ld.a, experts, what);
    ldb_ = upload_copies(ld.b, experts, what);
    ldd_ = upload_copies(ld.d, experts, what);

    // A persistent grid: one full wave of CTAs, each walking the tiles of
    // every expert in turn (the sizes are read on the device).
    const int ctas = G::Gemm::sufficient();
    if (ctas <= 0) throw std::runtime_error("CUTLASS grouped GEMM: no CTA fits on this GPU");
    typename G::Gemm::Arguments args(groups_.shapes, experts, ctas,
                                     {1.0f, product == Product::kForward ? 0.0f : 1.0f},  // dx and dW accumulate
                                     groups_.a, groups_.b, groups_.c, groups_.d, lda_, ldb_, ldd_, ldd_);
    if (G::Gemm::can_implement(args) != cutlass::Status::kSuccess) {
      throw std::runtime_error("CUTLASS grouped GEMM cannot run I=" + std::to_string(I) + " O=" + std::to_string(O));
    }
    if (gemm_.initialize(args, nullptr, stream()) != cutlass::Status::kSuccess) {
      throw std::runtime_error("CUTLASS grouped GEMM: initialize failed");
    }
  }

  void run(const int32_t* offsets, int64_t M, const Bf16* a_base, const Bf16* b_base, typename G::D* d_base,
           const std::string& what) {
    groups_.fill_then(offsets, M, a_base, b_base, d_base, what, [&] { return gemm_.run(stream()); });
  }

 private:
  GroupArrays<cutlass::gemm::GemmCoord, Bf16*, typename G::D*, typename G::D> groups_;
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
