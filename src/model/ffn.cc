#include "src/model/ffn.h"

#include "src/config/derived.h"
#include "src/kernels/ops.h"

namespace moe {

DenseMLP::DenseMLP(const LayerContext& ctx, const std::string& prefix)
    : w1_(ctx.params[prefix + "mlp.gate_proj.weight"]),
      w3_(ctx.params[prefix + "mlp.up_proj.weight"]),
      w2_(ctx.params[prefix + "mlp.down_proj.weight"]),
      gemm_(ctx.dense_gemm) {
  const int64_t N = ctx.N(), F = w1_.place.local_shape[0];  // ffn_hidden / tp under tensor parallelism
  reserve_dense(gemm_, ctx.pool.device(), N, ctx.model.dim, F);
  reserve_dense(gemm_, ctx.pool.device(), N, F, ctx.model.dim);
  for (Tensor* t : {&a_, &b_}) *t = ctx.save_act(SavedKind::kProduct, {N, F});
  g_ = ctx.save_act(SavedKind::kElementwise, {N, F});
  da_ = ctx.scratch_act(ScratchRole::kMlpDa, {N, F});
  db_ = ctx.scratch_act(ScratchRole::kMlpDb, {N, F});
  dg_ = ctx.scratch_act(ScratchRole::kMlpDg, {N, F});
}

void DenseMLP::forward(const Tensor& out_ND, const Tensor& x_ND) {
  dense_forward(gemm_, a_, x_ND, w1_);
  dense_forward(gemm_, b_, x_ND, w3_);
  ops::swiglu_forward(g_, a_, b_);
  dense_forward(gemm_, out_ND, g_, w2_);
}

void DenseMLP::recompute_elementwise() { ops::swiglu_forward(g_, a_, b_); }

void DenseMLP::backward(const Tensor& dx_ND, const Tensor& dout_ND, const Tensor& x_ND) {
  dense_backward(gemm_, dg_, w2_, dout_ND, g_, ops::GradInto::kWrite);
  ops::swiglu_backward(da_, db_, dg_, a_, b_);
  dense_backward(gemm_, dx_ND, w1_, da_, x_ND);
  dense_backward(gemm_, dx_ND, w3_, db_, x_ND);
}

GroupedSwiGLU::GroupedSwiGLU(const LayerContext& ctx, const SwiGLUScratch& scratch, int64_t max_rows, int64_t F,
                             int64_t experts) {
  const int64_t D = ctx.model.dim;
  ops::reserve_grouped_matmul(ctx.pool.device(), experts, D, F, ctx.act);  // w1, w3
  ops::reserve_grouped_matmul(ctx.pool.device(), experts, F, D, ctx.act);  // w2
  for (Tensor* t : {&a_, &b_}) *t = ctx.save_act(SavedKind::kProduct, {max_rows, F});
  g_ = ctx.save_act(SavedKind::kElementwise, {max_rows, F});
  da_ = ctx.scratch_act(scratch.da, {max_rows, F});
  db_ = ctx.scratch_act(scratch.db, {max_rows, F});
  dg_ = ctx.scratch_act(scratch.dg, {max_rows, F});
}

void GroupedSwiGLU::hidden(int64_t M) {
  const Tensor g = g_.rows(0, M);
  ops::swiglu_forward(g, a_.rows(0, M), b_.rows(0, M));
  if (!dropout_) return;
  const HiddenDropout& d = *dropout_;
  ops::multiply_noise_rows(g, g, d.row_ids.rows(0, M), d.rows_per_micro_batch, d.noise_key, d.stream, d.keep);
}

void GroupedSwiGLU::forward(const Tensor& out_MD, const Tensor& x_MD, const ExpertWeights& w, const Tensor& offsets_E1,
                            const HiddenDropout* dropout) {
  const int64_t M = rows_ = x_MD.size(0);
  dropout_ = dropout;
  ops::grouped_matmul_forward(a_.rows(0, M), x_MD, w.w1, offsets_E1);
  ops::grouped_matmul_forward(b_.rows(0, M), x_MD, w.w3, offsets_E1);
  hidden(M);
  ops::grouped_matmul_forward(out_MD, g_.rows(0, M), w.w2, offsets_E1);
}

void GroupedSwiGLU::recompute_elementwise() { hidden(rows_); }

void GroupedSwiGLU::backward(const Tensor& dx_MD, const Tensor& dout_MD, const Tensor& x_MD, const ExpertWeights& w,
                             const Tensor& offsets_E1) {
  const int64_t M = x_MD.size(0);
  const Tensor a = a_.rows(0, M), b = b_.rows(0, M), g = g_.rows(0, M);
  const Tensor da = da_.rows(0, M), db = db_.rows(0, M), dg = dg_.rows(0, M);
  zero(dg);
  ops::grouped_matmul_backward(dg, w.dw2, dout_MD, g, w.w2, offsets_E1);
  if (dropout_) {  // g = mask * silu(a) * b: the mask's rows again
    const HiddenDropout& d = *dropout_;
    ops::multiply_noise_rows(dg, dg, d.row_ids.rows(0, M), d.rows_per_micro_batch, d.noise_key, d.stream, d.keep);
  }
  ops::swiglu_backward(da, db, dg, a, b);
  ops::grouped_matmul_backward(dx_MD, w.dw1, da, x_MD, w.w1, offsets_E1);
  ops::grouped_matmul_backward(dx_MD, w.dw3, db, x_MD, w.w3, offsets_E1);
}

}  // namespace moe
