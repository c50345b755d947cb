// What the layers save in forward for their backward, and where it lives under
// activation checkpointing (train.activation_checkpointing):
//   none:      every block keeps its own saved tensors until its backward.
//   selective: every block keeps what is costly to compute again (GEMM,
//              attention and collective outputs, the dispatch plan); what is
//              cheap (norm outputs, SwiGLU products, the permuted copies of
//              the tokens) is one buffer for all blocks, written again by the
//              block's recompute just before its backward.
//   full:      every block keeps only its input (the residual stream, held by
//              the Transformer); all of its saved tensors are one set for all
//              blocks, and the block's forward runs again before its backward.
// Recomputing runs the same kernels on the same inputs, so the numbers (and
// the losses) are bit for bit those without checkpointing.
// Buffers are shared by shape and dtype: a block reuses a buffer that an
// earlier block asked for with the same shape and dtype, never one it
// already holds itself.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "src/config/job_config.h"
#include "src/core/tensor_pool.h"

namespace moe {

// What a saved tensor costs to compute again.
enum class SavedKind {
  kProduct,      // a GEMM's, attention's or a collective's output, or the dispatch plan: recomputed under "full"
  kElementwise,  // a norm's or SwiGLU's output, a permuted copy: recomputed under "selective" and "full"
};

class SavedActivations {
 public:
  SavedActivations(TensorPool& pool, ActivationCheckpointing mode);
  SavedActivations(const SavedActivations&) = delete;
  SavedActivations& operator=(const SavedActivations&) = delete;

  // The tensors asked for from now on belong to the next block.
  void begin_block();
  // A tensor the block writes in forward and reads in backward: its own, or
  // one shared with the other blocks when the mode recomputes this kind.
  Tensor get(SavedKind kind, std::initializer_list<int64_t> shape, DType dtype);

  ActivationCheckpointing mode() const { return mode_; }
  bool recomputes(SavedKind kind) const;

 private:
  struct Shared {
    Tensor tensor;
    int64_t block;  // the last block that took it
  };
  TensorPool& pool_;
  ActivationCheckpointing mode_;
  int64_t block_ = 0;
  std::vector<Shared> shared_;
};

}  // namespace moe
