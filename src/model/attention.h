// Causal self-attention with grouped KV heads and RoPE (HF Llama/Mixtral):
//   q = x Wq^T, k = x Wk^T, v = x Wv^T; rope(q), rope(k);
//   a = softmax(q k^T / sqrt(Dh), causal) v;  out = a Wo^T.
// Under tensor parallelism a rank holds H/tp query and G/tp kv heads (q/k/v
// column-parallel, o row-parallel): its output is a partial sum and its input
// gradient too; Block all-reduces both over the tp group.
// Legend: N = B*T tokens, D dim, H/G query/kv heads (this rank's), Dh head dim.
#pragma once

#include <string>

#include "src/model/layer_common.h"

namespace moe {

class Attention {
 public:
  Attention(const LayerContext& ctx, const std::string& prefix);  // prefix "model.layers.3."

  // x_ND is kept by reference until backward (the caller owns it).
  void forward(const Tensor& out_ND, const Tensor& x_ND);
  // dx_ND = d(out)/d(x)^T dout (written); weight gradients accumulate into the params.
  void backward(const Tensor& dx_ND, const Tensor& dout_ND, const Tensor& x_ND);

 private:
  int64_t B_, T_, H_, G_, Dh_;
  float rope_theta_;
  Param &wq_, &wk_, &wv_, &wo_;
  DenseGemm gemm_;
  // Saved by forward: q and k after RoPE, v, the attention output and its log-sum-exp.
  Tensor q_, k_, v_, att_, lse_;
  // Backward scratch.
  Tensor dq_, dk_, dv_, datt_;
};

}  // namespace moe
