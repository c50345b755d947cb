// Pipeline parallelism's 1F1B schedule (Narayanan et al. 2021, as in
// Megatron-LM): the step's micro-batches flow through the stages, each stage
// running forwards until the pipeline is full, then one forward and one
// backward in turn, then the remaining backwards. A stage sends its output
// [B*T, dim] to the next stage and the gradient of its input to the
// previous one over the pp group (Communicator::send_recv, paired so that
// neighbours never wait on each other).
//
// Memory: a stage keeps only the input of each micro-batch in flight (at most
// pp of them) and runs its forward again right before that micro-batch's
// backward (the last stage, whose forward and backward are back to back,
// does not), so its activations are one micro-batch's, as without pp, at the
// cost of one more forward on every stage but the last.
//
// The model (Transformer) knows nothing of the schedule: it is one stage.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "src/core/tensor_pool.h"
#include "src/model/transformer.h"
#include "src/parallel/communicator.h"

namespace moe {

class PipelineSchedule {
 public:
  // pp: the stages of this rank's pipeline (rank = stage). The model's pool
  // holds the in-flight inputs: min(pp, micro_batches) of [B*T, dim].
  PipelineSchedule(Transformer& model, Communicator& pp, TensorPool& pool, int64_t micro_batches);

  // One training step's forwards and backwards. load(m) puts micro-batch m's
  // tokens, targets and noise key into the model (called again before m's
  // backward on stages that run its forward again). Returns the sum of the
  // micro-batches' mean losses on the last stage, 0 on the others.
  double train(const std::function<void(int64_t)>& load, float loss_scale);
  // Forward only, micro-batch by micro-batch (evaluation): the same returns.
  double evaluate(const std::function<void(int64_t)>& load, int64_t micro_batches);

 private:
  void receive_forward(int64_t micro);
  void forward(int64_t micro, const std::function<void(int64_t)>& load, float loss_scale);
  void backward(int64_t micro, const std::function<void(int64_t)>& load, float loss_scale);
  Tensor& slot(int64_t micro) { return inputs_[static_cast<size_t>(micro) % inputs_.size()]; }

  Transformer& model_;
  Communicator& pp_;
  int64_t micro_batches_;
  int prev_, next_;             // neighbouring stages' ranks in pp, -1 at the ends
  std::vector<Tensor> inputs_;  // the in-flight micro-batches' stage inputs (not on the first stage)
  double loss_ = 0;
};

}  // namespace moe
