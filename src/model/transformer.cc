#include "src/model/transformer.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "src/config/derived.h"
#include "src/kernels/ops.h"
#include "src/model/param_names.h"
#include "src/model/fsdp.h"

namespace moe {

Transformer::Transformer(const ModelConfig& m, int64_t B, int64_t T, int64_t ce_chunk_rows, TensorPool& pool,
                         ParamStore& params, const ModelParallel& parallel, ActivationCheckpointing checkpointing,
                         DenseGemm dense_gemm)
    : model_(m),
      parallel_(parallel),
      B_(B),
      T_(T),
      N_(B * T),
      D_(m.dim),
      V_(m.vocab_size),
      chunk_(lm_head_chunk_rows(ce_chunk_rows, B * T, m.vocab_size)),
      params_(params),
      first_block_(stage_blocks(m, params.layout().pp, params.coord().pp).first),
      scratch_(pool),
      saved_(pool, checkpointing) {
  const int64_t stages = params.layout().pp, stage = params.coord().pp;
  if (stage == 0) embed_ = &params[param_name::embedding()];
  if (stage == stages - 1) {
    final_norm_ = &params[param_name::final_norm()];
    head_ = m.tie_embeddings ? &params[param_name::embedding()] : &params[param_name::lm_head()];
  }
  // Activations in the parameters' compute dtype (bf16 under mixed precision).
  if (num_moe_blocks(m) > 0) moe_counters_ = std::make_unique<MoEStepCounters>(pool, num_moe_blocks(m), m.num_experts);
  noise_key_ = pool.alloc({noise::kKeyWords}, DType::kI32);
  LayerContext ctx{
      m, B, T, pool, params, parallel_, scratch_, saved_, params.compute_dtype(), noise_key_, moe_counters_.get()};
  ctx.dense_gemm = dense_gemm;
  const StageBlocks mine = stage_blocks(m, stages, stage);
  for (int64_t l = mine.first; l < mine.last; ++l) {
    saved_.begin_block();
    blocks_.push_back(std::make_unique<Block>(ctx, l));
    if (!blocks_.back()->moe()) continue;
    moe_layers_.push_back(blocks_.back()->moe());
    moe_block_indices_.push_back(l);
  }
  inputs_ = pool.alloc({B, T}, DType::kI32);
  targets_ = pool.alloc({B, T}, DType::kI32);
  for (size_t l = 0; l <= blocks_.size(); ++l) resid_.push_back(ctx.alloc_act({N_, D_}));
  if (last_stage()) {
    final_out_ = ctx.alloc_act({N_, D_});
    final_rstd_ = pool.alloc({N_});
    logits_ = ctx.alloc_act({chunk_, V_});
    loss_n_ = pool.alloc({N_});
    loss_host_.resize(static_cast<size_t>(N_));
    dfinal_ = ctx.alloc_act({N_, D_});
  } else {
    dstage_out_ = ctx.alloc_act({N_, D_});
  }
  dresid_a_ = ctx.alloc_act({N_, D_});
  dresid_b_ = ctx.alloc_act({N_, D_});
  reset_moe_step_stats();
}

void Transformer::set_noise_key(uint64_t seed, int64_t step, int64_t global_micro_batch) {
  const int32_t words[noise::kKeyWords] = {static_cast<int32_t>(seed & 0xFFFFFFFFu), static_cast<int32_t>(seed >> 32),
                                           static_cast<int32_t>(step), static_cast<int32_t>(global_micro_batch)};
  upload(noise_key_, words);
}

void Transformer::reset_moe_step_stats() {
  if (moe_counters_) moe_counters_->zero();
  for (MoELayer* layer : moe_layers_) layer->reset_step_stats();
}

std::vector<MoEStepStats> Transformer::read_moe_step_stats() {
  std::vector<MoEStepStats> stats;
  if (!moe_counters_) return stats;
  moe_counters_->download();
  for (const MoELayer* layer : moe_layers_) stats.push_back(layer->step_stats());
  return stats;
}

void Transformer::stage_forward(ForwardPass pass, float loss_scale) {
  const bool training = pass == ForwardPass::kTrain;
  Fsdp* fsdp = parallel_.fsdp;
  if (fsdp) fsdp->gather(Fsdp::kOuter, training);  // kept until the end of backward (empty on a middle stage)
  if (first_stage()) ops::embedding_forward(resid_[0], inputs_.reshaped({N_}), embed_->value);
  for (size_t l = 0; l < blocks_.size(); ++l) {
    if (fsdp) fsdp->gather(block_index(l), false);
    blocks_[l]->forward(resid_[l + 1], resid_[l], pass, loss_scale);
  }
  if (!last_stage()) return;
  ops::rmsnorm_forward(final_out_, final_rstd_, resid_.back(), final_norm_->value, static_cast<float>(model_.norm_eps));
  head_and_loss(training, loss_scale);
}

void Transformer::head_and_loss(bool with_grad, float loss_scale) {
  const Tensor targets = targets_.reshaped({N_});
  // d(mean loss)/d(logits) = (softmax - onehot) / N, times the micro-batch's share of the step.
  const float grad_scale = with_grad ? loss_scale / static_cast<float>(N_) : 0.0f;
  for (int64_t r0 = 0; r0 < N_; r0 += chunk_) {
    const int64_t n = std::min(chunk_, N_ - r0);
    const Tensor logits = logits_.rows(0, n), x = final_out_.rows(r0, n);
    ops::matmul_forward(logits, x, head_->value);
    ops::cross_entropy_forward_backward(loss_n_.rows(r0, n), logits, logits, targets.rows(r0, n), grad_scale);
    if (with_grad) {
      ops::matmul_backward(dfinal_.rows(r0, n), head_->grad, logits, x, head_->value, ops::GradInto::kWrite);
    }
  }
}

double Transformer::read_loss() {
  if (!last_stage()) throw std::logic_error("Transformer::read_loss: only the last pipeline stage has the loss");
  download(loss_host_.data(), loss_n_);
  double sum = 0;
  for (float l : loss_host_) sum += l;
  return sum / static_cast<double>(N_);
}

bool Transformer::micro_batch_has_collectives() const {
  return parallel_.fsdp || parallel_.tp->size() > 1 || parallel_.ep->size() > 1 || !first_stage() || !last_stage();
}

void Transformer::replay_micro_batches_as_graph() {
  if (micro_batch_has_collectives()) {
    throw std::logic_error(
        "Transformer: a micro-batch with collectives inside (FSDP, tp, ep, pp) is not captured as a graph");
  }
  graph_ = std::make_unique<StreamGraph>();
}

double Transformer::forward_backward(float loss_scale) {
  if (!graph_) {
    forward_and_backward(loss_scale);
  } else if (!graph_->captured() && !graph_warm_) {
    forward_and_backward(loss_scale);  // sizes the kernels' scratch and GEMM plans before capture
    graph_warm_ = true;
  } else {
    if (!graph_->captured()) {
      graph_->capture([&] { forward_and_backward(loss_scale); });
      graph_scale_ = loss_scale;
    }
    if (loss_scale != graph_scale_) {
      throw std::logic_error("Transformer: the captured micro-batch has loss scale " + std::to_string(graph_scale_) +
                             ", asked for " + std::to_string(loss_scale));
    }
    graph_->replay();
  }
  for (MoELayer* layer : moe_layers_) layer->count_micro_batch();
  return read_loss();
}

void Transformer::forward_and_backward(float loss_scale) {
  stage_forward(ForwardPass::kTrain, loss_scale);
  stage_backward(loss_scale);
}

void Transformer::stage_backward(float loss_scale) {
  // The gradient ping-pongs between two buffers, block by block: on the last
  // stage dresid_a_ (from the final norm) and dresid_b_; elsewhere the
  // received gradient's buffer, free once the last block has read it, and dresid_b_.
  Tensor dout = dstage_out_, dx = dresid_b_;
  if (last_stage()) {
    ops::rmsnorm_backward(dresid_a_, final_norm_->grad, dfinal_, resid_.back(), final_norm_->value, final_rstd_,
                          /*dresidual=*/Tensor{});
    dout = dresid_a_;
  }
  Fsdp* fsdp = parallel_.fsdp;
  for (size_t l = blocks_.size(); l-- > 0;) {
    if (fsdp) fsdp->gather(block_index(l), true);
    // resid_[l + 1] is free now (block l + 1's backward is done): a full
    // recompute writes the same values to it again.
    blocks_[l]->recompute(resid_[l + 1], resid_[l], loss_scale);
    blocks_[l]->backward(dx, dout, resid_[l]);
    if (fsdp) fsdp->reduce_grads(block_index(l));
    std::swap(dout, dx);
  }
  stage_input_grad_ = dout;
  if (first_stage()) ops::embedding_backward(embed_->grad, dout, inputs_.reshaped({N_}));
  if (fsdp) fsdp->reduce_grads(Fsdp::kOuter);
}

double Transformer::evaluate() {
  stage_forward(ForwardPass::kEval, 0.0f);
  return read_loss();
}

double Transformer::last_aux_loss() {
  double aux = 0;
  for (MoELayer* layer : moe_layers_) aux += layer->last_aux_loss();
  return aux;
}

}  // namespace moe
