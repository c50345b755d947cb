#include "src/model/decoder.h"

#include <stdexcept>
#include <string>
#include <utility>

#include "src/config/derived.h"
#include "src/kernels/ops.h"
#include "src/model/moe/routers.h"
#include "src/model/param_names.h"

namespace moe {
Decoder::Decoder(const ModelConfig& m, ParamStore& params, std::vector<Tensor> router_biases, int64_t max_len,
                 TensorPool& pool)
    : D_(m.dim),
      H_(m.n_heads),
      G_(kv_heads(m)),
      Dh_(head_dim(m)),
      V_(m.vocab_size),
      F_(ffn_hidden(m)),
      Fe_(m.num_experts > 0 ? expert_hidden(m) : 0),
      E_(m.num_experts),
      K_(m.moe_top_k),
      S_(m.moe_shared_experts),
      max_len_(max_len),
      eps_(static_cast<float>(m.norm_eps)),
      theta_(static_cast<float>(m.rope_theta)),
      scratch_(pool),
      saved_(pool, ActivationCheckpointing::kNone),
      embed_(&params[param_name::embedding()]),
      final_norm_(&params[param_name::final_norm()]),
      head_(m.tie_embeddings ? &params[param_name::embedding()] : &params[param_name::lm_head()]) {
  const DType act = params.compute_dtype();
  size_t moe_index = 0;
  for (int64_t l = 0; l < m.n_layers; ++l) {
    Layer layer{};
    layer.ln1 = &params[param_name::in_block(l, "input_layernorm.weight")];
    layer.ln2 = &params[param_name::in_block(l, "post_attention_layernorm.weight")];
    layer.wq = &params[param_name::in_block(l, "self_attn.q_proj.weight")];
    layer.wk = &params[param_name::in_block(l, "self_attn.k_proj.weight")];
    layer.wv = &params[param_name::in_block(l, "self_attn.v_proj.weight")];
    layer.wo = &params[param_name::in_block(l, "self_attn.o_proj.weight")];
    if (is_moe_block(m, l)) {
      layer.router = make_router(m.moe_router, {m, params[param_name::router_gate(l)], 1, 1, pool, scratch_, saved_,
                                                act, no_noise_, params, l, /*decoding=*/true});
      layer.w1 = &params[param_name::routed_experts(l, "w1")];
      layer.w3 = &params[param_name::routed_experts(l, "w3")];
      layer.w2 = &params[param_name::routed_experts(l, "w2")];
      if (S_ > 0) {
        layer.shared_w1 = &params[param_name::shared_experts(l, "w1")];
        layer.shared_w3 = &params[param_name::shared_experts(l, "w3")];
        layer.shared_w2 = &params[param_name::shared_experts(l, "w2")];
      }
      if (moe_index < router_biases.size()) copy_tensor(layer.router->bias(), router_biases[moe_index]);
      ++moe_index;
    } else {
      layer.w1 = &params[param_name::in_block(l, "mlp.gate_proj.weight")];
      layer.w3 = &params[param_name::in_block(l, "mlp.up_proj.weight")];
      layer.w2 = &params[param_name::in_block(l, "mlp.down_proj.weight")];
    }
    layer.k_cache = pool.alloc({max_len, G_, Dh_}, act);
    layer.v_cache = pool.alloc({max_len, G_, Dh_}, act);
    layers_.push_back(std::move(layer));
  }
  token_ = pool.alloc({1}, DType::kI32);
  for (Tensor* t : {&x_, &h_, &ln_, &o_, &ffn_}) *t = pool.alloc({1, D_}, act);
  rstd_ = pool.alloc({1});
  q_ = pool.alloc({1, 1, H_, Dh_}, act);
  k_ = pool.alloc({1, 1, G_, Dh_}, act);
  v_ = pool.alloc({1, 1, G_, Dh_}, act);
  att_ = pool.alloc({H_, Dh_}, act);
  for (Tensor* t : {&a_, &b_, &g_}) *t = pool.alloc({1, F_}, act);
  if (E_ > 0) {
    offsets_ = pool.alloc({E_ + 1}, DType::kI32);
    row_pair_ = pool.alloc({K_}, DType::kI32);
    pair_row_ = pool.alloc({1, K_}, DType::kI32);
    xs_ = pool.alloc({K_, D_}, act);
    ys_ = pool.alloc({K_, D_}, act);
    for (Tensor* t : {&ea_, &eb_, &eg_}) *t = pool.alloc({K_, Fe_}, act);
    shared_out_ = pool.alloc({1, D_}, act);
    one_group_ = pool.alloc({2}, DType::kI32);
    const int32_t rows[2] = {0, 1};
    upload(one_group_, rows);
  }
  logits_ = pool.alloc({1, V_}, act);
  logits_f32_ = pool.alloc({1, V_});
  logits_host_.resize(static_cast<size_t>(V_));
}

void Decoder::attention(const Layer& l, int64_t position) {
  ops::rmsnorm_forward(ln_, rstd_, x_, l.ln1->value, eps_);
  ops::matmul_forward(q_.reshaped({1, H_ * Dh_}), ln_, l.wq->value);
  ops::matmul_forward(k_.reshaped({1, G_ * Dh_}), ln_, l.wk->value);
  ops::matmul_forward(v_.reshaped({1, G_ * Dh_}), ln_, l.wv->value);
  ops::rope_forward(q_, theta_, position);
  ops::rope_forward(k_, theta_, position);
  copy_tensor(l.k_cache.rows(position, 1), k_.reshaped({1, G_, Dh_}));
  copy_tensor(l.v_cache.rows(position, 1), v_.reshaped({1, G_, Dh_}));
  ops::attention_decode(att_, q_.reshaped({H_, Dh_}), l.k_cache, l.v_cache, position + 1);
  ops::matmul_forward(o_, att_.reshaped({1, H_ * Dh_}), l.wo->value);
  ops::add_rmsnorm_forward(h_, ln_, rstd_, x_, o_, l.ln2->value, eps_);  // h = x + attention; ln = norm(h)
}

void Decoder::dense_mlp(const Layer& l) {
  ops::matmul_forward(a_, ln_, l.w1->value);
  ops::matmul_forward(b_, ln_, l.w3->value);
  ops::swiglu_forward(g_, a_, b_);
  ops::matmul_forward(ffn_, g_, l.w2->value);
}

void Decoder::moe(const Layer& l) {
  l.router->forward(ln_, /*training=*/false, /*grad_scale=*/0.0f);
  ops::moe_plan(offsets_, row_pair_, pair_row_, l.router->topk_idx(), /*capacity=*/0);
  ops::moe_permute(xs_, ln_, pair_row_);
  ops::grouped_matmul_forward(ea_, xs_, l.w1->value, offsets_);
  ops::grouped_matmul_forward(eb_, xs_, l.w3->value, offsets_);
  ops::swiglu_forward(eg_, ea_, eb_);
  ops::grouped_matmul_forward(ys_, eg_, l.w2->value, offsets_);
  zero(ffn_);
  ops::moe_unpermute(ffn_, ys_, l.router->topk_w(), pair_row_);
  for (int64_t s = 0; s < S_; ++s) {
    const Tensor a = ea_.rows(0, 1), b = eb_.rows(0, 1), g = eg_.rows(0, 1);
    ops::grouped_matmul_forward(a, ln_, l.shared_w1->value.rows(s, 1), one_group_);
    ops::grouped_matmul_forward(b, ln_, l.shared_w3->value.rows(s, 1), one_group_);
    ops::swiglu_forward(g, a, b);
    ops::grouped_matmul_forward(shared_out_, g, l.shared_w2->value.rows(s, 1), one_group_);
    ops::add(ffn_, ffn_, shared_out_);
  }
}

const std::vector<float>& Decoder::step(int32_t token, int64_t position) {
  if (position < 0 || position >= max_len_) {
    throw std::logic_error("Decoder::step: position " + std::to_string(position) + " outside the cache of " +
                           std::to_string(max_len_));
  }
  upload(token_, &token);
  ops::embedding_forward(x_, token_, embed_->value);
  for (const Layer& l : layers_) {
    attention(l, position);
    if (l.router) {
      moe(l);
    } else {
      dense_mlp(l);
    }
    ops::add(x_, h_, ffn_);
  }
  ops::rmsnorm_forward(ln_, rstd_, x_, final_norm_->value, eps_);
  ops::matmul_forward(logits_, ln_, head_->value);
  ops::cast(logits_f32_, logits_);
  download(logits_host_.data(), logits_f32_);
  return logits_host_;
}

}  // namespace moe
