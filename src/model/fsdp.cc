#include "src/model/fsdp.h"

#include <algorithm>
#include <stdexcept>

#include "src/kernels/ops.h"

namespace moe {

Fsdp::Fsdp(ParamStore& params, Communicator& dp_shard, TensorPool& pool) : comm_(dp_shard) {
  int64_t blocks = 0;
  for (const Param& p : params.all()) blocks = std::max(blocks, p.spec.block + 1);
  units_.resize(static_cast<size_t>(blocks + 1));
  for (Param& p : params.all()) {
    if (p.place.shards != comm_.size()) {
      throw std::logic_error("Fsdp: " + p.spec.name + " is placed for " + std::to_string(p.place.shards) +
                             " shards, the group has " + std::to_string(comm_.size()) + " ranks");
    }
    Unit& u = unit(p.spec.block);
    u.params.push_back(&p);
    u.offsets.push_back(u.numel);
    u.numel += p.place.gathered_numel();
  }
  int64_t max_block = 0, max_unit_shards = 0;
  for (size_t i = 1; i < units_.size(); ++i) max_block = std::max(max_block, units_[i].numel);
  for (Unit& u : units_) {
    for (const Param* p : u.params) {
      u.shard_offsets.push_back(u.shard_numel);
      u.shard_numel += p->shard.numel();
    }
    max_unit_shards = std::max(max_unit_shards, u.shard_numel);
  }
  // Values are gathered in the compute dtype (bf16 halves the all-gather under
  // mixed precision); gradients are reduce-scattered in fp32.
  const DType compute = params.compute_dtype();
  outer_values_ = pool.alloc({std::max<int64_t>(units_[0].numel, 1)}, compute);
  outer_grads_ = pool.alloc({std::max<int64_t>(units_[0].numel, 1)});
  block_values_ = pool.alloc({std::max<int64_t>(max_block, 1)}, compute);
  block_grads_ = pool.alloc({std::max<int64_t>(max_block, 1)});
  scratch_ = pool.alloc({std::max<int64_t>(max_unit_shards, 1)});
}

Fsdp::Unit& Fsdp::unit(int64_t index) {
  const size_t i = static_cast<size_t>(index + 1);
  if (index < kOuter || i >= units_.size()) throw std::logic_error("Fsdp: no unit " + std::to_string(index));
  return units_[i];
}

void Fsdp::gather(int64_t index, bool with_grads) {
  Unit& u = unit(index);
  const Tensor& values = index == kOuter ? outer_values_ : block_values_;
  const Tensor& grads = index == kOuter ? outer_grads_ : block_grads_;
  if (with_grads) zero(grads.rows(0, u.numel));
  CollectiveBatch batch(comm_);  // one NCCL launch for the unit
  for (size_t i = 0; i < u.params.size(); ++i) {
    Param& p = *u.params[i];
    const Tensor gathered = values.rows(u.offsets[i], p.place.gathered_numel());
    comm_.all_gather(gathered, p.shard_compute.reshaped({p.shard_compute.numel()}));
    p.value.data = gathered.data;  // the first local_numel elements; the rest is padding
    if (with_grads) p.grad.data = grads.rows(u.offsets[i], p.place.gathered_numel()).data;
  }
}

void Fsdp::reduce_grads(int64_t index) {
  Unit& u = unit(index);
  const Tensor& grads = index == kOuter ? outer_grads_ : block_grads_;
  {
    CollectiveBatch batch(comm_);  // one NCCL launch for the unit; each param its own slice of scratch
    for (size_t i = 0; i < u.params.size(); ++i) {
      Param& p = *u.params[i];
      const Tensor full = grads.rows(u.offsets[i], p.place.gathered_numel());
      comm_.reduce_scatter(scratch_.rows(u.shard_offsets[i], p.shard.numel()), full, ReduceOp::kSum);
    }
  }
  for (size_t i = 0; i < u.params.size(); ++i) {
    Param& p = *u.params[i];
    ops::add(p.shard_grad, p.shard_grad, scratch_.rows(u.shard_offsets[i], p.shard.numel()));
  }
}

int64_t Fsdp::buffer_bytes() const {
  return outer_values_.bytes() + outer_grads_.bytes() + block_values_.bytes() + block_grads_.bytes() + scratch_.bytes();
}

}  // namespace moe
