// ParamStore: the model's parameters, built from the registry
// (param_spec.h), each with its value and gradient tensors, initialised the
// same way whatever the layout:
// - normal(0, init_std) for linears, routers, experts and the embedding;
// - output projections (attention o_proj, dense down_proj, every expert and
//   shared-expert w2) additionally scaled by 1/sqrt(2 * n_layers), so the
//   residual stream does not grow with depth (GPT-2 / Megatron);
// - RMSNorm weights at 1;
// each drawn from a counter-based stream keyed by (seed, parameter name) and
// the element's global index.
#pragma once

#include <string>
#include <vector>

#include "src/config/job_config.h"
#include "src/core/tensor.h"
#include "src/core/tensor_pool.h"
#include "src/model/param_spec.h"

namespace moe {

struct Param {
  ParamSpec spec;
  Tensor value;  // fp32
  Tensor grad;   // fp32, same shape
  bool weight_decay = false;  // AdamW decays matrices only (ndim > 1)
};

class ParamStore {
 public:
  ParamStore(const ModelConfig& m, TensorPool& pool);

  void init(const ModelConfig& m, uint64_t seed);
  void zero_grads();

  Param& operator[](const std::string& name);
  const Param& operator[](const std::string& name) const;
  std::vector<Param>& all() { return params_; }
  const std::vector<Param>& all() const { return params_; }
  int64_t numel() const;

 private:
  std::vector<Param> params_;
};

}  // namespace moe
