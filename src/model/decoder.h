// Generation with a KV cache: the model's weights (the whole model, one
// process) run on one new token at its position, reading the keys and values
// of the earlier tokens from a cache, so each token costs one pass over the
// weights and one over the cache. Only ops:: functions, so it runs where the
// weights live (CPU or GPU), with the layers' math: RMSNorm, attention with
// RoPE at the token's position, the dense MLP or the MoE block. An MoE block
// routes the token with the training's router (routers.h; the sigmoid
// router's bias included) but with no capacity: every token reaches its top-k
// experts.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "src/config/job_config.h"
#include "src/core/tensor_pool.h"
#include "src/kernels/ops.h"
#include "src/model/moe/router.h"
#include "src/model/params.h"
#include "src/model/saved_activations.h"
#include "src/model/shared_scratch.h"

namespace moe {

class Decoder {
 public:
  // `params`: the whole model (one process, no FSDP). `router_biases`: the
  // routers' selection biases (Router::bias), one per MoE block in block
  // order (empty: zero biases). Buffers and caches come from `pool`, in the
  // parameters' compute dtype, for up to `max_len` tokens.
  Decoder(const ModelConfig& m, ParamStore& params, std::vector<Tensor> router_biases, int64_t max_len,
          TensorPool& pool);

  // Feeds `token` at `position` (0, 1, 2, ... in order: every earlier position
  // has been fed) and returns the next token's logits (fp32, on the host).
  const std::vector<float>& step(int32_t token, int64_t position);
  int64_t max_len() const { return max_len_; }

 private:
  struct Layer {
    const Param *ln1, *ln2, *wq, *wk, *wv, *wo;
    const Param *w1, *w3, *w2;       // dense MLP [O, I], or routed experts [E, I, O]
    std::unique_ptr<Router> router;  // MoE blocks only, routing one token
    const Param *shared_w1 = nullptr, *shared_w3 = nullptr, *shared_w2 = nullptr;  // [S, I, O]
    Tensor k_cache, v_cache;
  };
  void attention(const Layer& l, int64_t position);
  void dense_mlp(const Layer& l);
  void moe(const Layer& l);

  int64_t D_, H_, G_, Dh_, V_, F_, Fe_, E_, K_, S_, max_len_;
  float eps_, theta_;
  SharedScratch scratch_;   // the routers' (unused) backward buffers
  SavedActivations saved_;  // and their routing buffers
  Tensor no_noise_;         // generation draws no router jitter
  std::vector<Layer> layers_;
  const Param *embed_, *final_norm_, *head_;
  Tensor token_, x_, h_, ln_, rstd_, q_, k_, v_, att_, o_, ffn_;
  Tensor a_, b_, g_;                                        // dense MLP
  Tensor offsets_, row_pair_, pair_row_;                    // the token's dispatch plan
  Tensor xs_, ea_, eb_, eg_, ys_, shared_out_, one_group_;  // its experts
  Tensor logits_, logits_f32_;
  std::vector<float> logits_host_;
};

}  // namespace moe
