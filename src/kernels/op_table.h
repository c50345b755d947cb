// The op table: every op of ops.h written once as a case, a function of a
// `Side` that makes its inputs, runs the op and names its outputs. The same
// case runs on a host Side (the CPU reference) and on a device Side with the
// same seeds, so both see the same numbers (op_check.h compares them); the
// differentiable ops also declare their gradient, which the CPU holds against
// central finite differences of the forward (check_gradients in op_check.h).
// A new op is a row here; ggml's test-backend-ops is the model.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "src/core/tensor_pool.h"
#include "src/kernels/op_check.h"

namespace moe::op_check {

// |got - want| <= atol + rtol |want|; with of_max, atol is that fraction of
// the largest |want| of the output (for ops whose error scales with it), plus
// `floor` (for outputs whose exact value may be 0 everywhere).
struct Tol {
  double rtol = 0, atol = 0;
  bool of_max = false;
  double floor = 0;
};
constexpr Tol kExact{0, 0};
std::string tol_text(const Tol& t);

// Where a tensor's dtype comes from. kAct, kAct1, kAct2, kAct3 are the case's
// activation-dtype slots: check-gpu gives them all the activations' dtype;
// the full sweep (tests) tries every F32/BF16 combination of them, as the
// kernels accept mixed dtypes (a bf16 input with an f32 output, ...).
enum class Kind { kAct, kAct1, kAct2, kAct3, kF32, kBF16, kI32 };

// One side of a check: the host (CPU reference) or the device. Values come
// from seeds in call order, so both sides of a case agree.
class Side {
 public:
  // `slots`: the dtypes of kAct, kAct1, ... in order.
  Side(Device device, std::vector<DType> slots);

  Device device() const { return device_; }
  DType act() const { return slots_[0]; }
  DType dtype(Kind k) const;
  // For tolerances: the F32 one, or rtol 1e-2 when `k` is BF16 here (one
  // bf16 rounding is at most 2^-9; a value on a boundary may round to its
  // neighbour, 2^-8).
  Tol tol(Kind k, Tol f32) const;

  std::vector<float> gaussian(int64_t n, float scale);
  std::vector<float> uniform(int64_t n, float lo, float hi);
  std::vector<int32_t> ids(int64_t n, int32_t hi);
  // What a tensor of `kind` holds after `values` are stored in it (bf16 rounds).
  std::vector<float> stored(Kind kind, std::vector<float> values) const;

  Tensor tensor(const std::vector<int64_t>& shape, Kind kind, const std::vector<float>& values);
  Tensor randn(const std::vector<int64_t>& shape, Kind kind, float scale = 1.0f);
  Tensor i32(const std::vector<int64_t>& shape, const std::vector<int32_t>& values);
  Tensor zeros(const std::vector<int64_t>& shape, Kind kind);

  // The op under test; on the device, timed to the end of its work.
  void run(const std::function<void()>& op);

  struct Output {
    std::string name;
    Tensor t;
    Tol tol;
    std::vector<double> scalar;  // for ops that return a value
    std::vector<double> scale;   // per element: atol is tol.atol times this (plus tol.floor)
  };
  void output(const std::string& name, const Tensor& t, Tol tol) { outputs_.push_back({name, t, tol, {}, {}}); }
  void output(const std::string& name, double value, Tol tol) {
    outputs_.push_back({name, Tensor{}, tol, {value}, {}});
  }
  // With an absolute tolerance per element: tol.atol * scale[i].
  void output(const std::string& name, const Tensor& t, Tol tol, std::vector<double> scale) {
    outputs_.push_back({name, t, tol, {}, std::move(scale)});
  }
  const std::vector<Output>& outputs() const { return outputs_; }
  double ms() const { return ms_; }
  // An output's values as doubles (a host sync for device tensors).
  static std::vector<double> values(const Output& o);

  // A gradient declaration (host sides only): L = sum over `seen` of
  // dot(dout, out). `forward` writes the outs from the inputs; `backward`
  // writes or adds each input's gradient of L into its grad, which the check
  // zeroes first.
  struct Wrt {
    std::string name;
    Tensor x, grad;
  };
  struct Seen {
    Tensor out, dout;
  };
  struct Gradient {
    std::vector<Wrt> inputs;
    std::vector<Seen> seen;
    std::function<void()> forward, backward;
    double rtol = 1e-2, atol = 1e-3;  // see check_gradients
  };
  void gradient(Gradient g) { gradient_ = std::move(g); }
  const Gradient& declared_gradient() const { return gradient_; }

 private:
  void sync() const;

  TensorPool pool_;
  Device device_;
  std::vector<DType> slots_;
  int seed_ = 0;
  double ms_ = 0;
  std::vector<Output> outputs_;
  Gradient gradient_;
};

struct Case {
  std::string op, shape;
  // The number of activation-dtype slots (kAct, kAct1, ...) the case uses;
  // 0: its dtypes are fixed by the op, and it runs once, in F32.
  int dtype_slots;
  std::function<void(Side&)> body;
  // The device gives the same bits when the case runs twice (no atomics in
  // another order): checked by the full sweep.
  bool deterministic = false;
  // The slot dtypes the op supports; empty: every combination.
  std::function<bool(const std::vector<DType>&)> accepts;
  // Runs on a device only where it has FP8 GEMMs (gpu_kernels.h), else skipped.
  bool needs_fp8_gemms = false;
};

std::string dims(std::initializer_list<int64_t> d);

// GEMM outputs are held to |got - want| <= rel_out |want| + rel_mag *
// magnitude, the magnitude of an element being sum_k |a_k b_k| over its sum
// (plus |prior| where the op adds): the scale of its fp32 round-off whatever
// the order of the sum, so elements that cancel to ~0 are not held to a
// relative bound.
// sum_k |a(r, k)| |b(k, c)| for every (r, c) of an R x C product with K
// terms, the operands read through strides.
std::vector<double> abs_products(const float* a, const float* b, int64_t R, int64_t C, int64_t K, int64_t a_r,
                                 int64_t a_k, int64_t b_k, int64_t b_c);
// m + |prior|, element by element.
std::vector<double> plus_abs(std::vector<double> m, const std::vector<float>& prior);
// fp32: only the order of the sum differs (rel_mag 1e-5); bf16 inputs: tensor
// cores do not round to nearest (1e-4); bf16 outputs: one more rounding
// (rel_out 1e-2). As a Tol: {rel_out, rel_mag}, with the magnitude as scale.
Tol gemm_tol(DType in, DType out);
// The input/output slot pairs the GEMMs support: cuBLASLt has no f32-in,
// bf16-out kernel.
bool gemm_dtypes(const std::vector<DType>& slots);

// Every comparison case at `shapes`: the dense ops and the optimizer's
// (op_table.cc), the router and the MoE dispatch (op_table_moe.cc).
std::vector<Case> cases(const Shapes& shapes);
std::vector<Case> dense_cases(const Shapes& shapes);
std::vector<Case> moe_cases(const Shapes& shapes);

// The differentiable ops' gradient declarations at `shapes` (op_gradients.cc):
// bodies that call Side::gradient on a host side in F32.
std::vector<Case> gradient_cases(const Shapes& shapes);
// check_gradients (op_check.h) of these declarations.
std::vector<Result> check_gradient_cases(const std::vector<Case>& cases);

}  // namespace moe::op_check
