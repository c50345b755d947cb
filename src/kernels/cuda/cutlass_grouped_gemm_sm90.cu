// CUTLASS 3 grouped GEMMs for the experts on sm_90a (cutlass_grouped_gemm.h;
// the products and their operands: cutlass_grouped_common.cuh). Compiled for
// sm_90a only (-gencode arch=compute_90a,code=sm_90a): TMA and wgmma are
// Hopper features that no other architecture runs, so the kernel choice
// (src/kernels/kernel_choice.h) sends only sm_90 GPUs here.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/group_array_problem_shape.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "src/kernels/cuda/cutlass_grouped_arch.h"
#include "src/kernels/cuda/cutlass_grouped_common.cuh"

namespace moe::cuda::cutlass_grouped {
namespace {

using ProblemShape = cutlass::gemm::GroupProblemShape<cute::Shape<int, int, int>>;
using Shape3 = ProblemShape::UnderlyingProblemShape;
using Bf16 = cutlass::bfloat16_t;

// One grouped GEMM: bf16 A and B, fp32 accumulation, D of ElementD, 128 x 128
// x 64 tiles, the cooperative warp-specialised schedule (two consumer warp
// groups share a tile), one CTA per cluster.
template <class LayoutA, class LayoutB, class ElementD>
struct Sm90GroupedGemm {
  static constexpr int kAlignAB = 128 / cutlass::sizeof_bits<Bf16>::value;  // 16 bytes
  static constexpr int kAlignD = 128 / cutlass::sizeof_bits<ElementD>::value;
  using TileShape = cute::Shape<cute::_128, cute::_128, cute::_64>;
  using ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, ElementD, cutlass::layout::RowMajor*, kAlignD,
      ElementD, cutlass::layout::RowMajor*, kAlignD, cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative,
      cutlass::epilogue::fusion::LinearCombination<ElementD, float>>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Bf16, LayoutA*, kAlignAB, Bf16, LayoutB*, kAlignAB, float,
      TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
  using StrideA = typename Kernel::InternalStrideA;
  using StrideB = typename Kernel::InternalStrideB;
  using StrideC = typename Kernel::InternalStrideC;
  using StrideD = typename Kernel::InternalStrideD;
  using D = ElementD;
};

using Forward = Sm90GroupedGemm<cutlass::layout::RowMajor, cutlass::layout::RowMajor, Bf16>;
using InputGrad = Sm90GroupedGemm<cutlass::layout::RowMajor, cutlass::layout::ColumnMajor, Bf16>;
using WeightGrad = Sm90GroupedGemm<cutlass::layout::ColumnMajor, cutlass::layout::RowMajor, float>;

// A stride of one matrix per group: its leading dimension `ld` in the one
// dynamic mode among M/N and K (the other is the unit stride), batch stride 0.
template <class Stride>
Stride packed_stride(int64_t ld) {
  Stride s{};
  if constexpr (std::is_same_v<std::decay_t<decltype(cute::get<0>(s))>, int64_t>) cute::get<0>(s) = ld;
  if constexpr (std::is_same_v<std::decay_t<decltype(cute::get<1>(s))>, int64_t>) cute::get<1>(s) = ld;
  return s;
}

// One product's plan at one shape: its group arrays and the CUTLASS kernel
// initialised on them, once; each call refills the arrays and launches.
template <class G>
class Plan {
 public:
  Plan(Product product, int experts, int64_t I, int64_t O) : groups_(product, experts, I, O) {
    const std::string what = "CUTLASS grouped GEMM plan";
    // Leading dimensions, the same for every group: upload once.
    const LeadingDims ld = leading_dims(product, I, O);
    stride_a_ = upload_copies(packed_stride<typename G::StrideA>(ld.a), experts, what);
    stride_b_ = upload_copies(packed_stride<typename G::StrideB>(ld.b), experts, what);
    stride_c_ = upload_copies(packed_stride<typename G::StrideC>(ld.d), experts, what);
    stride_d_ = upload_copies(packed_stride<typename G::StrideD>(ld.d), experts, what);

    typename G::Gemm::Arguments args;
    int device = 0;
    check(cudaGetDevice(&device), what);
    const auto hw = cutlass::KernelHardwareInfo::make_kernel_hardware_info<typename G::Kernel>(device);
    decltype(args.epilogue.thread) fusion;
    fusion.alpha = 1.0f;
    fusion.beta = product == Product::kForward ? 0.0f : 1.0f;
    fusion.alpha_ptr = nullptr;
    fusion.beta_ptr = nullptr;
    args = typename G::Gemm::Arguments{cutlass::gemm::GemmUniversalMode::kGrouped,
                                       {experts, groups_.shapes, nullptr},  // shapes on the device only
                                       {groups_.a, stride_a_, groups_.b, stride_b_},
                                       {fusion, groups_.c, stride_c_, groups_.d, stride_d_},
                                       hw};
    if (gemm_.can_implement(args) != cutlass::Status::kSuccess) {
      throw std::runtime_error("CUTLASS grouped GEMM cannot run I=" + std::to_string(I) + " O=" + std::to_string(O));
    }
    const size_t workspace = G::Gemm::get_workspace_size(args);
    check(cudaMalloc(&workspace_, std::max<size_t>(workspace, 1)), what);
    if (gemm_.initialize(args, workspace_, stream()) != cutlass::Status::kSuccess) {
      throw std::runtime_error("CUTLASS grouped GEMM: initialize failed");
    }
  }

  void run(const int32_t* offsets, int64_t M, const Bf16* a_base, const Bf16* b_base, typename G::D* d_base,
           const std::string& what) {
    groups_.fill_then(offsets, M, a_base, b_base, d_base, what, [&] { return gemm_.run(stream()); });
  }

 private:
  GroupArrays<Shape3, const Bf16*, const typename G::D*, typename G::D> groups_;
  typename G::StrideA* stride_a_ = nullptr;
  typename G::StrideB* stride_b_ = nullptr;
  typename G::StrideC* stride_c_ = nullptr;
  typename G::StrideD* stride_d_ = nullptr;
  void* workspace_ = nullptr;
  typename G::Gemm gemm_;
};

}  // namespace

ArchGemms& sm90_gemms() {
  static GroupedGemms<Plan<Forward>, Plan<InputGrad>, Plan<WeightGrad>> gemms;
  return gemms;
}

}  // namespace moe::cuda::cutlass_grouped
