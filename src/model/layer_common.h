// What every layer is told when it is built: the micro-batch it is planned
// for (all activation buffers are sized from it once) and where to allocate.
#pragma once

#include <cstdint>

#include "src/config/job_config.h"
#include "src/core/tensor_pool.h"
#include "src/model/params.h"

namespace moe {

struct LayerContext {
  const ModelConfig& model;
  int64_t B;  // sequences per micro-batch
  int64_t T;  // tokens per sequence
  TensorPool& pool;
  ParamStore& params;

  int64_t N() const { return B * T; }
};

}  // namespace moe
