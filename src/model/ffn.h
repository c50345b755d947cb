// The two SwiGLU feed-forwards, y = (silu(x W1) * (x W3)) W2:
// - DenseMLP: one MLP over all tokens, HF Llama weights [F, D] / [D, F]
//   (gate_proj = W1, up_proj = W3, down_proj = W2), run as x W^T. Under
//   tensor parallelism W1/W3 are column- and W2 row-parallel (F/tp per rank):
//   the output and the input gradient are partial sums that Block all-reduces.
// - GroupedSwiGLU: many experts at once over rows sorted by expert, packed
//   weights w1, w3 [E, D, F] and w2 [E, F, D], run as grouped matmuls x W[e].
//   Routed experts use it with the dispatch offsets; each shared expert uses
//   it as a group of one over all tokens.
// Legend: N tokens, M rows, D dim, F hidden, E experts.
#pragma once

#include <string>

#include "src/kernels/cpu/counter_noise.h"
#include "src/model/layer_common.h"

namespace moe {

class DenseMLP {
 public:
  DenseMLP(const LayerContext& ctx, const std::string& prefix);
  void forward(const Tensor& out_ND, const Tensor& x_ND);
  // The SwiGLU product again from the kept GEMM outputs (selective checkpointing).
  void recompute_elementwise();
  void backward(const Tensor& dx_ND, const Tensor& dout_ND, const Tensor& x_ND);

 private:
  Param &w1_, &w3_, &w2_;
  DenseGemm gemm_;
  Tensor a_, b_, g_;     // saved: x W1^T, x W3^T, silu(a) * b      [N, F]
  Tensor da_, db_, dg_;  // backward scratch (shared by all layers)  [N, F]
};

// Weights and their gradients for a group of experts (views into Params).
struct ExpertWeights {
  Tensor w1, w3, w2;     // [E, D, F], [E, D, F], [E, F, D]
  Tensor dw1, dw3, dw2;  // same shapes
};

// The roles of a group of experts' backward scratch, shared with every other
// GroupedSwiGLU of that group (routed or shared experts) in the model.
struct SwiGLUScratch {
  ScratchRole da, db, dg;
};
inline constexpr SwiGLUScratch kRoutedExpertsScratch{ScratchRole::kRoutedExpertsDa, ScratchRole::kRoutedExpertsDb,
                                                     ScratchRole::kRoutedExpertsDg};
inline constexpr SwiGLUScratch kSharedExpertsScratch{ScratchRole::kSharedExpertsDa, ScratchRole::kSharedExpertsDb,
                                                     ScratchRole::kSharedExpertsDg};

// Dropout of the hidden activation, keyed per row by the row's place in the
// micro-batch (row_of: I32, its (token, slot) pair), so a mask follows its
// token whatever the experts' row order.
struct HiddenDropout {
  Tensor row_ids;  // I32 [rows, 2]: each row's (global micro-batch, pair), set with each forward's rows
  int64_t rows_per_micro_batch;
  const Tensor& noise_key;
  uint64_t stream;
  noise::Distribution keep;  // kKeep with a = 1 - p
};

class GroupedSwiGLU {
 public:
  // `experts` weights [experts, D, F] and [experts, F, D] will come with each call.
  GroupedSwiGLU(const LayerContext& ctx, const SwiGLUScratch& scratch, int64_t max_rows, int64_t F, int64_t experts);
  // x_MD, out_MD: the first M rows (views); offsets_E1 holds E+1 row offsets with offsets[E] == M.
  // With `dropout` (training), the hidden activation is masked; the same
  // mask applies in backward and in a selective recompute.
  void forward(const Tensor& out_MD, const Tensor& x_MD, const ExpertWeights& w, const Tensor& offsets_E1,
               const HiddenDropout* dropout = nullptr);
  // The SwiGLU product of the last forward's rows again (selective checkpointing).
  void recompute_elementwise();
  void backward(const Tensor& dx_MD, const Tensor& dout_MD, const Tensor& x_MD, const ExpertWeights& w,
                const Tensor& offsets_E1);

 private:
  Tensor a_, b_, g_, da_, db_, dg_;         // [max_rows, F]; each call uses the first M rows; d* shared by all layers
  int64_t rows_ = 0;                        // M of the last forward
  const HiddenDropout* dropout_ = nullptr;  // of the last forward

  // g = silu(a) * b over the first M rows, masked by the last forward's dropout.
  void hidden(int64_t M);
};

}  // namespace moe
