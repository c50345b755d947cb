#include "src/train/pipeline_schedule.h"

#include <algorithm>
#include <stdexcept>

namespace moe {

PipelineSchedule::PipelineSchedule(Transformer& model, Communicator& pp, TensorPool& pool, int64_t micro_batches)
    : model_(model),
      pp_(pp),
      micro_batches_(micro_batches),
      prev_(pp.rank() > 0 ? pp.rank() - 1 : -1),
      next_(pp.rank() + 1 < pp.size() ? pp.rank() + 1 : -1) {
  if (model.first_stage() != (prev_ < 0) || model.last_stage() != (next_ < 0)) {
    throw std::logic_error("PipelineSchedule: the model's stage is not its rank in the pp group");
  }
  if (model.first_stage()) return;  // the first stage's input is its tokens, loaded again
  const Tensor& in = model.stage_input();
  for (int64_t i = 0; i < std::min<int64_t>(pp.size(), micro_batches); ++i) {
    inputs_.push_back(pool.alloc({in.size(0), in.size(1)}, in.dtype));
  }
}

void PipelineSchedule::receive_forward(int64_t micro) {
  if (prev_ >= 0) pp_.send_recv(Tensor{}, -1, slot(micro), prev_);
}

void PipelineSchedule::forward(int64_t micro, const std::function<void(int64_t)>& load, float loss_scale) {
  load(micro);
  if (!model_.first_stage()) copy_tensor(model_.stage_input(), slot(micro));
  model_.stage_forward(ForwardPass::kTrain, loss_scale);
  if (model_.last_stage()) loss_ += model_.read_loss();
}

void PipelineSchedule::backward(int64_t micro, const std::function<void(int64_t)>& load, float loss_scale) {
  if (!model_.last_stage()) {
    // Another micro-batch ran through this stage since micro's forward: run it again.
    forward(micro, load, loss_scale);
  }
  model_.stage_backward(loss_scale);
}

double PipelineSchedule::train(const std::function<void(int64_t)>& load, float loss_scale) {
  loss_ = 0;
  const int64_t M = micro_batches_;
  const int64_t warmup = std::min<int64_t>(pp_.size() - pp_.rank() - 1, M), steady = M - warmup;
  int64_t fwd = 0, bwd = 0;
  for (int64_t i = 0; i < warmup; ++i, ++fwd) {
    receive_forward(fwd);
    forward(fwd, load, loss_scale);
    pp_.send_recv(model_.stage_output(), next_, Tensor{}, -1);
  }
  if (steady > 0) receive_forward(fwd);
  for (int64_t i = 0; i < steady; ++i, ++fwd, ++bwd) {
    forward(fwd, load, loss_scale);
    // Send this output on while the next stage sends back the gradient of the oldest in flight.
    pp_.send_recv(model_.stage_output(), next_, model_.stage_output_grad(), next_);
    backward(bwd, load, loss_scale);
    const bool more = i + 1 < steady && prev_ >= 0;
    // Send that gradient back while the previous stage sends the next input.
    pp_.send_recv(model_.stage_input_grad(), prev_, more ? slot(fwd + 1) : Tensor{}, more ? prev_ : -1);
  }
  for (int64_t i = 0; i < warmup; ++i, ++bwd) {
    pp_.send_recv(Tensor{}, -1, model_.stage_output_grad(), next_);
    backward(bwd, load, loss_scale);
    pp_.send_recv(model_.stage_input_grad(), prev_, Tensor{}, -1);
  }
  return loss_;
}

double PipelineSchedule::evaluate(const std::function<void(int64_t)>& load, int64_t micro_batches) {
  double loss = 0;
  for (int64_t m = 0; m < micro_batches; ++m) {
    load(m);
    pp_.send_recv(Tensor{}, -1, model_.stage_input(), prev_);
    model_.stage_forward(ForwardPass::kEval, 0.0f);
    pp_.send_recv(model_.stage_output(), next_, Tensor{}, -1);
    if (model_.last_stage()) loss += model_.read_loss();
  }
  return loss;
}

}  // namespace moe
