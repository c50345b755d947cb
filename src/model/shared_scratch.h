// Buffers a layer needs only while its own forward or backward runs: the
// backward's gradient scratch (dq, dln, da, dxs, ...) and forward temporaries
// (a block's attention and FFN outputs before they join the residual). Layers
// run one at a time, so one buffer per role serves every layer: this is most
// of what the activations would otherwise cost (about half, for the 1B
// benchmark model). What a layer saves for its backward stays its own.
// A role always has one shape; asking again with another is a bug (logic_error).
#pragma once

#include <initializer_list>
#include <map>
#include <string>

#include "src/core/tensor_pool.h"

namespace moe {

class SharedScratch {
 public:
  explicit SharedScratch(TensorPool& pool) : pool_(pool) {}
  SharedScratch(const SharedScratch&) = delete;
  SharedScratch& operator=(const SharedScratch&) = delete;

  // The buffer of `role` ("attention.dq", ...), allocated on first use.
  Tensor get(const std::string& role, std::initializer_list<int64_t> shape, DType dtype);

 private:
  TensorPool& pool_;
  std::map<std::string, Tensor> buffers_;
};

}  // namespace moe
