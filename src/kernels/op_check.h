// The op table (op_table.h) run three ways:
// - check_ops: every op on the current GPU against the CPU reference on the
//   same inputs, with the activations' dtype; what `moe_train check-gpu` runs
//   on the user's device (src/train/gpu_check.h);
// - check_ops_every_dtype: the same in every F32/BF16 mix an op accepts, and
//   twice for the ops that promise the same bits run to run (the GPU tests);
// - check_gradients: on the CPU, each backward against central finite
//   differences of its forward (the CPU tests).
// Each output is compared element by element, |got - want| <= atol + rtol
// |want|, with the tolerances of op_table.cc.
#pragma once

#include <cstdint>
#include <set>
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
  double capacity_factor = 1.25;  // 0: dropless
  // The share of tokens whose logits put expert 0 first, to overflow its
  // capacity (the routing of the MoE rows).
  double routing_skew = 0;
  // The grouped GEMMs' rows per expert as offsets (experts + 1 of them, the
  // last at most N * top_k); empty: the routing's plan.
  std::vector<int32_t> expert_offsets;

  int64_t N() const { return B * T; }
  // "B=2 T=32 D=64 H=4/2x16 V=96 E=4 K=2"
  std::string text() const;
};

// Shapes from, in order: B, T, dim, heads, kv_heads, head_dim, hidden, vocab,
// experts, top_k, expert_hidden (the capacity factor stays 1.25).
Shapes shapes_of(int64_t B, int64_t T, int64_t D, int64_t H, int64_t G, int64_t Dh, int64_t F, int64_t V, int64_t E,
                 int64_t K, int64_t Fe);

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

// Every op at `shapes` in every F32/BF16 combination of its activation-dtype
// tensors (`dtype` names them in order, "bf16/f32/f32"); the ops that promise
// the same bits run to run run twice on the device. `only`: just these ops.
std::vector<Result> check_ops_every_dtype(const Shapes& shapes, const std::set<std::string>& only = {});

// Each backward op at `shapes` on the CPU in F32, against central finite
// differences (step 1e-2) of its forward at 16 evenly spread elements of each
// input: |analytic - numeric| <= 1e-3 + 1e-2 |numeric|. With inputs of order 1
// a float forward carries ~1e-7 relative error, so the difference carries
// ~1e-5 |L| of noise, and the truncation error is O(h^2) ~ 1e-4. `worst` and
// `detail` as for check_ops; ms is 0.
std::vector<Result> check_gradients(const Shapes& shapes);

}  // namespace moe::op_check
