// What the CUTLASS expert GEMMs of every GPU generation share
// (cutlass_grouped_gemm.h): the three products, each expert's slice of them
// computed on the device from the offsets (what keeps the launch free of host
// syncs), and the cache of per-shape plans. Each product as CUTLASS sees it,
// per expert e with m_e rows starting at row r_e (A is M x K, B is K x N, D is
// M x N):
//   forward  D = out[r_e:, :O] (row-major)  A = x[r_e:, :I] (K-major)    B = W[e] [I, O] (N-major)
//   dx       D = dx[r_e:, :I]  (row-major)  A = dout[r_e:, :O] (K-major) B = W[e]^T, read from [I, O] (K-major)
//   dW       D = dW[e] [I, O] fp32          A = x^T (M-major, ld I)      B = dout[r_e:, :O] (N-major)
// dx and dW accumulate (C = D, beta = 1). An expert without rows gets an
// empty problem: its dW is left as it was.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "cutlass/cutlass.h"
#include "cutlass/numeric_types.h"
#include "src/core/cuda_stream.h"
#include "src/core/tensor.h"
#include "src/kernels/cuda/cuda_check.h"
#include "src/kernels/cuda/cutlass_grouped_arch.h"

namespace moe::cuda::cutlass_grouped {

enum class Product { kForward, kInputGrad, kWeightGrad };

// One expert's GEMM in one product: D (m x n) = A (m x k) B (k x n), and
// where A, B and D start, in elements from their base pointers.
struct GroupSlice {
  int m = 0, n = 0, k = 0;
  int64_t a = 0, b = 0, d = 0;
};

// Expert e's slice, from the row offsets [E + 1] (clamped to the M rows, so a
// corrupt offset cannot send CUTLASS outside the tensors).
__device__ inline GroupSlice group_slice(Product product, const int32_t* offsets, int e, int64_t M, int64_t I,
                                         int64_t O) {
  int64_t r0 = offsets[e], r1 = offsets[e + 1];
  r0 = r0 < 0 ? 0 : (r0 > M ? M : r0);
  r1 = r1 < r0 ? r0 : (r1 > M ? M : r1);
  const int m = static_cast<int>(r1 - r0);
  GroupSlice s;
  switch (product) {
    case Product::kForward:  // out = x W[e]: a = x, b = W, d = out
      s = {m, static_cast<int>(O), static_cast<int>(I), r0 * I, e * I * O, r0 * O};
      break;
    case Product::kInputGrad:  // dx += dout W[e]^T: a = dout, b = W, d = dx
      s = {m, static_cast<int>(I), static_cast<int>(O), r0 * O, e * I * O, r0 * I};
      break;
    case Product::kWeightGrad:  // dW[e] += x^T dout: a = x, b = dout, d = dW; no rows, no problem
      s = {m > 0 ? static_cast<int>(I) : 0, m > 0 ? static_cast<int>(O) : 0, m, r0 * I, r0 * O, e * I * O};
      break;
  }
  return s;
}

// The leading dimensions of A, B and D in one product, the same for every expert.
struct LeadingDims {
  int64_t a = 0, b = 0, d = 0;
};
inline LeadingDims leading_dims(Product product, int64_t I, int64_t O) {
  switch (product) {
    case Product::kForward: return {I, O, O};
    case Product::kInputGrad: return {O, O, I};
    case Product::kWeightGrad: return {I, O, O};
  }
  return {};
}

// Each group's problem and operand pointers from the device offsets, one
// thread per expert: what makes the launch sync-free. Shape is the kernel's
// problem type, built from {m, n, k}; PtrAB and PtrC its operand pointer types
// (CUTLASS 2 takes non-const A, B and C, and only reads them).
template <class Shape, class PtrAB, class PtrC, class ElementD>
__global__ void fill_groups(Product product, const int32_t* offsets, int experts, int64_t M, int64_t I, int64_t O,
                            const cutlass::bfloat16_t* a_base, const cutlass::bfloat16_t* b_base, ElementD* d_base,
                            Shape* shapes, PtrAB* a, PtrAB* b, PtrC* c, ElementD** d) {
  const int e = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (e >= experts) return;
  const GroupSlice s = group_slice(product, offsets, e, M, I, O);
  shapes[e] = Shape{s.m, s.n, s.k};
  a[e] = const_cast<PtrAB>(a_base + s.a);
  b[e] = const_cast<PtrAB>(b_base + s.b);
  d[e] = d_base + s.d;
  c[e] = d[e];
}

// `experts` copies of `value` in device memory: a per-group array whose entries
// are all the same (leading dimensions, strides), uploaded once.
template <class T>
T* upload_copies(const T& value, int experts, const std::string& what) {
  const std::vector<T> host(static_cast<size_t>(experts), value);
  T* device = nullptr;
  check(cudaMalloc(&device, host.size() * sizeof(T)), what);
  check(cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), what);
  return device;
}

// The device arrays of one product's plan, which its CUTLASS kernel reads:
// each group's problem and its A, B, C and D pointers, refilled on the device
// before every launch. Allocated once; they never move, so a CUDA graph that
// captured a launch stays valid.
template <class Shape, class PtrAB, class PtrC, class ElementD>
struct GroupArrays {
  GroupArrays(Product product, int experts, int64_t I, int64_t O) : product(product), experts(experts), I(I), O(O) {
    const std::string what = "CUTLASS grouped GEMM plan";
    const size_t E = static_cast<size_t>(experts);
    check(cudaMalloc(&shapes, E * sizeof(Shape)), what);
    check(cudaMalloc(&a, E * sizeof(PtrAB)), what);
    check(cudaMalloc(&b, E * sizeof(PtrAB)), what);
    check(cudaMalloc(&c, E * sizeof(PtrC)), what);
    check(cudaMalloc(&d, E * sizeof(ElementD*)), what);
  }

  // Fills the arrays for this call's offsets and operands, then runs
  // launch() -> cutlass::Status, the kernel on them.
  template <class Launch>
  void fill_then(const int32_t* offsets, int64_t M, const cutlass::bfloat16_t* a_base,
                 const cutlass::bfloat16_t* b_base, ElementD* d_base, const std::string& what, Launch&& launch) {
    fill_groups<Shape, PtrAB, PtrC, ElementD><<<(experts + 127) / 128, 128, 0, stream()>>>(
        product, offsets, experts, M, I, O, a_base, b_base, d_base, shapes, a, b, c, d);
    check(cudaGetLastError(), what + " (groups)");
    if (launch() != cutlass::Status::kSuccess) throw std::runtime_error(what + ": CUTLASS launch failed");
    check(cudaGetLastError(), what);
  }

  Product product;
  int experts;
  int64_t I, O;
  Shape* shapes = nullptr;
  PtrAB* a = nullptr;
  PtrAB* b = nullptr;
  PtrC* c = nullptr;
  ElementD** d = nullptr;
};

// The three products of every expert weight shape [E, I, O] on every device,
// each a plan of one architecture's kernel: a class constructed as
// Plan(product, experts, I, O), which builds CUTLASS's arguments once, and
// whose run(offsets, M, a, b, d, what) fills the groups and launches. Plans
// are never moved once built, so CUDA graphs captured after stay valid.
template <class ForwardPlan, class InputGradPlan, class WeightGradPlan>
class GroupedGemms : public ArchGemms {
 public:
  // Builds the plans of [E, I, O] on the current device, once. Building
  // allocates and copies, which a graph capture in progress forbids.
  void prepare(int64_t E, int64_t I, int64_t O) override {
    const Key key = key_of(E, I, O);
    std::lock_guard<std::mutex> lock(mutex_);
    if (plans_.count(key)) return;
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    check(cudaStreamIsCapturing(stream(), &capturing), "CUTLASS grouped GEMM plans");
    if (capturing != cudaStreamCaptureStatusNone) {
      throw std::logic_error("its plans are built outside CUDA graph capture, and the stream is capturing");
    }
    const int experts = static_cast<int>(E);
    Plans plans;
    plans.forward = std::make_unique<ForwardPlan>(Product::kForward, experts, I, O);
    plans.input_grad = std::make_unique<InputGradPlan>(Product::kInputGrad, experts, I, O);
    plans.weight_grad = std::make_unique<WeightGradPlan>(Product::kWeightGrad, experts, I, O);
    check(cudaStreamSynchronize(stream()), "CUTLASS grouped GEMM plans");
    plans_.emplace(key, std::move(plans));
  }

  void forward(const Tensor& out_MO, const Tensor& x_MI, const Tensor& w_EIO, const Tensor& offsets_E1) override {
    plans_of(w_EIO).forward->run(offsets_E1.i32(), x_MI.size(0), bf16(x_MI), bf16(w_EIO), mutable_bf16(out_MO),
                                 "grouped_matmul_forward (CUTLASS)");
  }

  void backward(const Tensor& dx_MI, const Tensor& dw_EIO, const Tensor& dout_MO, const Tensor& x_MI,
                const Tensor& w_EIO, const Tensor& offsets_E1) override {
    Plans& plans = plans_of(w_EIO);
    const int64_t M = x_MI.size(0);
    if (dx_MI.data != nullptr) {
      plans.input_grad->run(offsets_E1.i32(), M, bf16(dout_MO), bf16(w_EIO), mutable_bf16(dx_MI),
                            "grouped_matmul_backward dx (CUTLASS)");
    }
    plans.weight_grad->run(offsets_E1.i32(), M, bf16(x_MI), bf16(dout_MO), static_cast<float*>(dw_EIO.data),
                           "grouped_matmul_backward dw (CUTLASS)");
  }

 private:
  struct Plans {
    std::unique_ptr<ForwardPlan> forward;
    std::unique_ptr<InputGradPlan> input_grad;
    std::unique_ptr<WeightGradPlan> weight_grad;
  };
  using Key = std::tuple<int, int64_t, int64_t, int64_t>;

  static Key key_of(int64_t E, int64_t I, int64_t O) {
    int device = 0;
    check(cudaGetDevice(&device), "CUTLASS grouped GEMM");
    return {device, E, I, O};
  }
  static const cutlass::bfloat16_t* bf16(const Tensor& t) { return static_cast<const cutlass::bfloat16_t*>(t.data); }
  static cutlass::bfloat16_t* mutable_bf16(const Tensor& t) { return static_cast<cutlass::bfloat16_t*>(t.data); }

  Plans& plans_of(const Tensor& w_EIO) {
    const Key key = key_of(w_EIO.size(0), w_EIO.size(1), w_EIO.size(2));
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = plans_.find(key);
    if (it == plans_.end()) {
      throw std::logic_error("CUTLASS grouped GEMM for w " + w_EIO.shape_string() + ": not prepared (prepare())");
    }
    return it->second;
  }

  std::mutex mutex_;
  std::map<Key, Plans> plans_;
};

}  // namespace moe::cuda::cutlass_grouped
