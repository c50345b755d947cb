// CUTLASS 3 grouped GEMMs for the experts on sm_90a (cutlass_grouped_gemm.h;
// the products and their operands: cutlass_grouped_common.cuh). Compiled for
// sm_90a only (-gencode arch=compute_90a,code=sm_90a): TMA and wgmma are
// Hopper features that no other architecture runs, so the kernel choice
// (src/kernels/kernel_choice.h) sends only sm_90 GPUs here.
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

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

// Each group's problem and pointers from the device offsets, one thread per
// expert: what makes the launch sync-free.
template <class ElementD>
__global__ void fill_groups(Product product, const int32_t* offsets, int experts, int64_t M, int64_t I, int64_t O,
                            const Bf16* a_base, const Bf16* b_base, ElementD* d_base, Shape3* shapes, const Bf16** a,
                            const Bf16** b, const ElementD** c, ElementD** d) {
  const int e = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (e >= experts) return;
  const GroupSlice s = group_slice(product, offsets, e, M, I, O);
  shapes[e] = Shape3{s.m, s.n, s.k};
  a[e] = a_base + s.a;
  b[e] = b_base + s.b;
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
    check(cudaMalloc(&shapes_, E * sizeof(Shape3)), what);
    check(cudaMalloc(&a_, E * sizeof(void*)), what);
    check(cudaMalloc(&b_, E * sizeof(void*)), what);
    check(cudaMalloc(&c_, E * sizeof(void*)), what);
    check(cudaMalloc(&d_, E * sizeof(void*)), what);
    // Leading dimensions, the same for every group: upload once.
    const LeadingDims ld = leading_dims(product, I, O);
    upload_strides(&stride_a_, packed_stride<typename G::StrideA>(ld.a), what);
    upload_strides(&stride_b_, packed_stride<typename G::StrideB>(ld.b), what);
    upload_strides(&stride_c_, packed_stride<typename G::StrideC>(ld.d), what);
    upload_strides(&stride_d_, packed_stride<typename G::StrideD>(ld.d), what);

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
                                       {experts, shapes_, nullptr},  // shapes on the device only
                                       {a_, stride_a_, b_, stride_b_},
                                       {fusion, c_, stride_c_, d_, stride_d_},
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
    fill_groups<typename G::D><<<(experts_ + 127) / 128, 128, 0, stream()>>>(
        product_, offsets, experts_, M, I_, O_, a_base, b_base, d_base, shapes_, a_, b_, c_, d_);
    check(cudaGetLastError(), what + " (groups)");
    if (gemm_.run(stream()) != cutlass::Status::kSuccess) throw std::runtime_error(what + ": CUTLASS launch failed");
    check(cudaGetLastError(), what);
  }

 private:
  template <class S>
  void upload_strides(S** dst, const S& s, const std::string& what) {
    const std::vector<S> host(static_cast<size_t>(experts_), s);
    check(cudaMalloc(dst, host.size() * sizeof(S)), what);
    check(cudaMemcpy(*dst, host.data(), host.size() * sizeof(S), cudaMemcpyHostToDevice), what);
  }

  Product product_;
  int experts_;
  int64_t I_, O_;
  Shape3* shapes_ = nullptr;
  const Bf16** a_ = nullptr;
  const Bf16** b_ = nullptr;
  const typename G::D** c_ = nullptr;
  typename G::D** d_ = nullptr;
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
