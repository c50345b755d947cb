#include "src/model/saved_activations.h"

#include <vector>

namespace moe {

SavedActivations::SavedActivations(TensorPool& pool, ActivationCheckpointing mode) : pool_(pool), mode_(mode) {}

void SavedActivations::begin_block() { ++block_; }

bool SavedActivations::recomputes(SavedKind kind) const {
  switch (mode_) {
    case ActivationCheckpointing::kNone: return false;
    case ActivationCheckpointing::kSelective: return kind == SavedKind::kElementwise;
    case ActivationCheckpointing::kFull: return true;
  }
  return false;
}

Tensor SavedActivations::get(SavedKind kind, std::initializer_list<int64_t> shape, DType dtype) {
  if (!recomputes(kind)) return pool_.alloc(shape, dtype);
  const std::vector<int64_t> want(shape);
  for (Shared& s : shared_) {
    const Tensor& t = s.tensor;
    if (s.block == block_ || t.dtype != dtype ||
        std::vector<int64_t>(t.shape.begin(), t.shape.begin() + t.ndim) != want) {
      continue;
    }
    s.block = block_;
    return t;
  }
  shared_.push_back({pool_.alloc(shape, dtype), block_});
  return shared_.back().tensor;
}

}  // namespace moe
