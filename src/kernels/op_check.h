// Every op of ops.h on the current GPU, held against the CPU reference on the
// same inputs: the table that `moe_train check-gpu` runs on the user's device
// (src/train/gpu_check.h). Each op is written once, as a function of a `Side`:
// it runs on a host Side (the CPU reference, fp32, widening bf16 inputs) and
// on a device Side, with the same seeds, so both see the same numbers; then
// each output is compared element by element:
//   |got - want| <= atol + rtol |want|
// with the tolerances the GPU tests use: exact for copies and integers; for
// F32 outputs rtol 1e-5 to 1e-4 (another summation order); for BF16 outputs
// rtol 1e-2 (one bf16 rounding is at most 2^-9; a value on a boundary may
// round to its neighbour, 2^-8); attention as its test says (bf16 P and dS for
// the tensor cores: 2e-2 of the largest value).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "src/core/tensor.h"

namespace moe::op_check {

// The layer shapes the ops run at.
struct Shapes {
  int64_t B = 2, T = 32;  // sequences, tokens per sequence
  int64_t dim = 64, heads = 4, kv_heads = 2, head_dim = 16;
  int64_t hidden = 128;  // a dense FFN's
  int64_t vocab = 96;
  int64_t experts = 4, top_k = 2, expert_hidden = 64;
  double capacity_factor = 1.25;

  int64_t N() const { return B * T; }
  // "B=2 T=32 D=64 H=4/2x16 V=96 E=4 K=2"
  std::string text() const;
};

struct Result {
  std::string op;
  std::string shape;     // the op's main shapes
  std::string dtype;     // "f32" or "bf16" (the activations'), or the op's own
  double max_error = 0;  // the largest |got - want| over the op's outputs
  double worst = 0;      // the largest |got - want| / (atol + rtol |want|): at most 1 passes
  std::string tolerance;
  double ms = 0;  // the device op's time, including a stream sync
  bool passed = false;
  std::string detail;  // for a failure: the output, element, got and want (or the error)
  // The kernel that ran on the device where a vendor's may ("cuDNN 9.19.0
  // fused SDPA", or the builtin one); empty for ops with only builtin kernels.
  std::string implementation;
  bool vendor = false;    // a vendor library's kernel ran
  bool replaced = false;  // a vendor kernel that failed, replaced by the builtin one (check-gpu)
};

// Every op at `shapes`, with activations in `act` (F32 or BF16), on the
// current CUDA device. Ops whose dtypes do not depend on the activations'
// (the optimizer's, integer plans) run only with act = F32. Never throws for
// a failing op: its Result says why.
std::vector<Result> check_ops(const Shapes& shapes, DType act);

}  // namespace moe::op_check
