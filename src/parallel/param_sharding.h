// Where one rank's part of a parameter sits in the global tensor: the
// parallel layout applied to a parameter's split description (registry:
// src/model/param_spec.h). Three cuts, in this order:
//   1. tp: dim tp_dim is cut into tp equal chunks (chunk = tp coordinate);
//   2. ep: for routed experts, dim 0 (experts) into ep chunks (chunk = ep coordinate);
//   3. FSDP: what is left ("local"), flattened, into dp_shard shards of
//      ceil(numel / dp_shard) elements, the last one zero-padded (shard =
//      dp_shard coordinate). Flat shards keep every rank's share within one
//      element of 1/dp_shard, whatever the shapes (a [1, D, F] shared expert
//      cut by rows would leave whole copies on some ranks and nothing on others).
// Layers compute with the local tensor; the optimizer owns only the shard.
// Initialisation, FSDP, checkpoints and the memory estimate all read this.
#pragma once

#include <cstdint>
#include <vector>

#include "src/config/derived.h"
#include "src/core/tensor.h"
#include "src/parallel/mesh.h"

namespace moe {

struct ParamPlacement {
  std::vector<int64_t> global_shape;
  std::vector<int64_t> local_shape;   // after the tp and ep cuts
  std::vector<int64_t> local_offset;  // the local tensor's first element, as global coordinates
  int64_t shards = 1;                 // dp_shard
  int64_t shard_numel = 0;            // elements per shard (padded)
  int64_t shard_begin = 0;            // first element of the flattened local tensor in this rank's shard
  int64_t shard_valid = 0;            // elements of this shard inside the local tensor (the rest is padding)

  int64_t local_numel() const;
  // The shard's shape: the local shape itself without FSDP, {shard_numel} with it.
  std::vector<int64_t> shard_shape() const;
  int64_t gathered_numel() const { return shard_numel * shards; }  // the padded all-gather
};

// tp_dim < 0: replicated across tp. expert_parallel: dim 0 is cut over ep.
// A dimension that the axis does not divide is a std::logic_error (validation
// refuses such configs first).
ParamPlacement place_parameter(const std::vector<int64_t>& global_shape, int tp_dim, bool expert_parallel,
                               const Layout& layout, const MeshCoord& coord);

// dst (fp32, its shape is the block's size) = the block of `global` (dense
// row-major fp32 of global_shape) whose first element is at `offset`.
void copy_global_block(const Tensor& dst, const float* global, const std::vector<int64_t>& global_shape,
                       const std::vector<int64_t>& offset);
// The inverse: the block of `global` at `offset` = src.
void copy_block_to_global(float* global, const std::vector<int64_t>& global_shape, const std::vector<int64_t>& offset,
                          const Tensor& src);

// piece (fp32, place.shard_shape()) = this rank's piece of `global` (dense
// row-major fp32 of place.global_shape): the local block (tp and ep cuts),
// then its flat FSDP shard, zero past shard_valid. Everything that fills a
// rank's state from whole tensors (initialisation, checkpoint loading, the
// Hugging Face import) keeps its piece through this one function.
void copy_own_piece(const Tensor& piece, const float* global, const ParamPlacement& place);

}  // namespace moe
