// What every layer is told when it is built: the micro-batch it is planned
// for (all activation buffers are sized from it once), where to allocate, the
// activation dtype, and the groups it talks to.
#pragma once

#include <cstdint>
#include <string>

#include "src/config/job_config.h"
#include "src/core/tensor_pool.h"
#include "src/model/dense_linear.h"
#include "src/model/params.h"
#include "src/model/saved_activations.h"
#include "src/model/shared_scratch.h"
#include "src/parallel/communicator.h"

namespace moe {

class Fsdp;
class MoEStepCounters;

// Why a layer's forward runs: a training micro-batch (which counts the MoE
// statistics), a checkpointed block's recompute in its backward (the same
// numbers again, counted once already), or evaluation and generation (no aux
// losses, the evaluation capacity).
enum class ForwardPass { kTrain, kRecompute, kEval };

// A block's noise streams (ops::multiply_noise), one per use, so that no two
// uses draw the same numbers.
enum class NoiseUse : uint64_t { kRouterJitter = 1, kRouterNoise = 2, kExpertDropout = 3 };
inline uint64_t noise_stream(int64_t layer, NoiseUse use) {
  return static_cast<uint64_t>(layer) << 8 | static_cast<uint64_t>(use);
}

// The model's view of the parallel layout: tensor-parallel and
// expert-parallel groups (one-rank groups in a single process) and, with
// dp_shard > 1, the FSDP units. The layer shapes themselves come from the
// parameters' placements.
struct ModelParallel {
  Communicator* tp = nullptr;
  Communicator* ep = nullptr;
  Fsdp* fsdp = nullptr;

  // One-rank groups, no FSDP.
  static ModelParallel single_process();
};

struct LayerContext {
  const ModelConfig& model;
  int64_t B;  // sequences per micro-batch
  int64_t T;  // tokens per sequence
  TensorPool& pool;
  ParamStore& params;
  const ModelParallel& parallel;
  SharedScratch& scratch;   // buffers of a layer's own pass, one per role for all layers
  SavedActivations& saved;  // what forward saves for backward, per block or shared under checkpointing
  // Activations and their gradients: f32, or bf16 under mixed precision on a
  // GPU. Router math, norms' rstd, attention's lse and losses stay f32 whatever this is.
  DType act = DType::kF32;
  // The key of the micro-batch's noise (I32 [4]: seed, step, global
  // micro-batch; ops::multiply_noise), on the model's device.
  const Tensor& noise_key;
  // Where the MoE layers keep their step statistics on the device (one buffer
  // for all of them: moe_step_counters.h); null in a model without MoE layers.
  MoEStepCounters* moe_counters = nullptr;
  // The numerics of the dense layers' GEMMs (dense_linear.h).
  DenseGemm dense_gemm = DenseGemm::kActivationDtype;

  int64_t N() const { return B * T; }
  Tensor alloc_act(std::initializer_list<int64_t> shape) const { return pool.alloc(shape, act); }
  Tensor scratch_act(ScratchRole role, std::initializer_list<int64_t> shape) const {
    return scratch.get(role, shape, act);
  }
  Tensor save(SavedKind kind, std::initializer_list<int64_t> shape, DType dtype) const {
    return saved.get(kind, shape, dtype);
  }
  Tensor save_act(SavedKind kind, std::initializer_list<int64_t> shape) const { return saved.get(kind, shape, act); }
};

}  // namespace moe
