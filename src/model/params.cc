#include "src/model/params.h"

#include <cmath>
#include <stdexcept>

#include "src/core/rng.h"

namespace moe {
namespace {

bool is_output_projection(const ParamSpec& p) {
  const std::string& n = p.name;
  auto ends_with = [&n](const std::string& s) { return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0; };
  return ends_with("self_attn.o_proj.weight") || ends_with("mlp.down_proj.weight") || ends_with("experts.w2") ||
         ends_with("shared_experts.w2");
}

}  // namespace

ParamStore::ParamStore(const ModelConfig& m, TensorPool& pool) {
  for (const ParamSpec& spec : model_param_specs(m)) {
    Param p;
    p.spec = spec;
    p.value = pool.alloc_shape(spec.shape);
    p.grad = pool.alloc_shape(spec.shape);
    p.weight_decay = spec.shape.size() > 1;
    params_.push_back(std::move(p));
  }
}

void ParamStore::init(const ModelConfig& m, uint64_t seed) {
  const double out_scale = 1.0 / std::sqrt(2.0 * static_cast<double>(m.n_layers));
  for (Param& p : params_) {
    float* v = p.value.f32();
    const int64_t n = p.value.numel();
    if (p.spec.kind == ParamKind::kNorm) {
      for (int64_t i = 0; i < n; ++i) v[i] = 1.0f;
      continue;
    }
    const double stdev = m.init_std * (is_output_projection(p.spec) ? out_scale : 1.0);
    const uint64_t key = stream_key(seed, p.spec.name);
    for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(stdev * normal_at(key, static_cast<uint64_t>(i)));
  }
}

void ParamStore::zero_grads() {
  for (Param& p : params_) zero(p.grad);
}

Param& ParamStore::operator[](const std::string& name) {
  for (Param& p : params_) {
    if (p.spec.name == name) return p;
  }
  throw std::logic_error("no parameter named " + name);
}

const Param& ParamStore::operator[](const std::string& name) const {
  return const_cast<ParamStore&>(*this)[name];
}

int64_t ParamStore::numel() const {
  int64_t n = 0;
  for (const Param& p : params_) n += p.value.numel();
  return n;
}

}  // namespace moe
