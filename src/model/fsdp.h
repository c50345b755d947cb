// FSDP (ZeRO-3) over the dp_shard group, one unit per transformer block plus
// an outer unit (embedding, final norm, LM head). Every parameter of a unit is
// stored as this rank's dim-0 shard (ParamStore: shard, shard_grad); before
// the unit runs, gather() all-gathers the full local tensors into a buffer
// and points the params' value (and grad) views at it; after its backward,
// reduce_grads() reduce-scatters the gradients and adds this rank's rows to
// shard_grad. A unit's collectives go out as one batch (one NCCL launch). All blocks share one buffer (a block's
// weights exist only while it runs); the outer unit has its own, because the embedding and the LM head are used at both
// ends of a micro-batch.
#pragma once

#include <cstdint>
#include <vector>

#include "src/core/tensor_pool.h"
#include "src/model/params.h"
#include "src/parallel/communicator.h"

namespace moe {

class Fsdp {
 public:
  static constexpr int64_t kOuter = -1;

  // dp_shard: the group the parameters are sharded over (its size is the layout's dp_shard).
  Fsdp(ParamStore& params, Communicator& dp_shard, TensorPool& pool);

  // unit: a block index or kOuter. with_grads also binds and zeroes the gradient buffer.
  void gather(int64_t unit, bool with_grads);
  void reduce_grads(int64_t unit);

  // Bytes of the gather buffers (values and gradients), the transient part of FSDP's memory.
  int64_t buffer_bytes() const;

 private:
  struct Unit {
    std::vector<Param*> params;
    std::vector<int64_t> offsets;  // element offset of each param's gathered tensor in the buffer
    int64_t numel = 0;
    std::vector<int64_t> shard_offsets;  // element offset of each param's shard in scratch_
    int64_t shard_numel = 0;
  };
  Unit& unit(int64_t index);

  Communicator& comm_;
  std::vector<Unit> units_;  // [0] the outer unit, [1 + l] block l
  Tensor outer_values_, outer_grads_, block_values_, block_grads_;
  Tensor scratch_;  // the shards of the largest unit: its reduce-scatter results, one batch
};

}  // namespace moe
