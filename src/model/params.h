// ParamStore: the model's parameters, built from the registry
// (param_spec.h) and placed by the parallel layout (param_sharding.h), each
// with the tensors a rank needs:
// - value, grad: the local tensor (after the tp and ep cuts) the layers
//   compute with. Without FSDP they are persistent; with FSDP (dp_shard > 1)
//   they are views that Fsdp (fsdp.h) binds to its gather buffers while a
//   block runs.
// - shard, shard_grad: the rows this rank owns and the optimizer updates
//   (value and grad themselves without FSDP), fp32 always (master weights).
// - shard_compute: the shard in the compute dtype, which layers read and FSDP
//   gathers: the shard itself for fp32 compute, a bf16 copy under mixed
//   precision (written by the optimizer's AdamW pass, and refreshed by
//   refresh_compute_copies() whenever anything else writes the masters). Gradients stay fp32 (the GEMMs accumulate
//   weight gradients in fp32).
// The store lives on the pool's device.
// Initialisation is the same whatever the layout:
// - normal(0, init_std) for linears, routers, experts and the embedding;
// - output projections (attention o_proj, dense down_proj, every expert and
//   shared-expert w2) additionally scaled by 1/sqrt(2 * n_layers), so the
//   residual stream does not grow with depth (GPT-2 / Megatron);
// - RMSNorm weights at 1;
// each drawn from a counter-based stream keyed by (seed, parameter name) and
// the element's global index, so every rank draws its part of one global tensor.
#pragma once

#include <string>
#include <vector>

#include "src/config/job_config.h"
#include "src/core/tensor.h"
#include "src/core/tensor_pool.h"
#include "src/model/param_spec.h"
#include "src/parallel/param_sharding.h"

namespace moe {

struct Param {
  ParamSpec spec;
  ParamPlacement place;
  Tensor value;               // compute dtype, local shape
  Tensor grad;                // fp32, local shape
  Tensor shard;               // fp32, place.shard_shape(): what this rank owns
  Tensor shard_grad;          // fp32, same shape
  Tensor shard_compute;       // compute dtype, same shape (== shard for fp32 compute)
  bool weight_decay = false;  // AdamW decays matrices only (ndim > 1)

  bool fsdp_sharded() const { return place.shards > 1; }
};

class ParamStore {
 public:
  // The whole model on one rank.
  ParamStore(const ModelConfig& m, TensorPool& pool);
  // This rank's part under `layout`; layers compute with `compute` (f32 or bf16) copies.
  ParamStore(const ModelConfig& m, TensorPool& pool, const Layout& layout, const MeshCoord& coord,
             DType compute = DType::kF32);

  // Draws the initial masters (and refreshes the compute copies).
  void init(const ModelConfig& m, uint64_t seed);
  // Compute copies = masters, after anything but the optimizer writes the
  // masters (initialisation, checkpoint load, import). A no-op for fp32 compute.
  void refresh_compute_copies();
  // Zeroes the shard gradients (and the local ones without FSDP).
  void zero_grads();

  Param& operator[](const std::string& name);
  const Param& operator[](const std::string& name) const;
  std::vector<Param>& all() { return params_; }
  const std::vector<Param>& all() const { return params_; }
  int64_t numel() const;  // global parameter count
  const Layout& layout() const { return layout_; }
  const MeshCoord& coord() const { return coord_; }
  DType compute_dtype() const { return compute_; }

 private:
  Layout layout_;
  MeshCoord coord_;
  DType compute_;
  std::vector<Param> params_;
};

}  // namespace moe
