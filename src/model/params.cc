#include "src/model/params.h"

#include <cmath>
#include <stdexcept>

#include "src/core/rng.h"
#include "src/kernels/ops.h"

namespace moe {
namespace {

bool is_output_projection(const ParamSpec& p) {
  const std::string& n = p.name;
  auto ends_with = [&n](const std::string& s) {
    return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0;
  };
  return ends_with("self_attn.o_proj.weight") || ends_with("mlp.down_proj.weight") || ends_with("experts.w2") ||
         ends_with("shared_experts.w2");
}

}  // namespace

ParamStore::ParamStore(const ModelConfig& m, TensorPool& pool) : ParamStore(m, pool, Layout{}, MeshCoord{}) {}

ParamStore::ParamStore(const ModelConfig& m, TensorPool& pool, const Layout& layout, const MeshCoord& coord,
                       DType compute)
    : layout_(layout), coord_(coord), compute_(compute) {
  for (const ParamSpec& spec : model_param_specs(m)) {
    if (!on_pipeline_stage(spec, m, layout.pp, coord.pp)) continue;  // another stage's
    Param p;
    p.spec = spec;
    p.place = place_parameter(spec.shape, spec.tp_dim, spec.expert_parallel, layout, coord);
    p.weight_decay = spec.shape.size() > 1;
    // Without FSDP the shard is the whole local tensor; with it, value and
    // grad are views that Fsdp binds to its gather buffers.
    const std::vector<int64_t> own = p.fsdp_sharded() ? p.place.shard_shape() : p.place.local_shape;
    p.shard = pool.alloc_shape(own);
    p.shard_grad = pool.alloc_shape(own);
    p.shard_compute = compute == DType::kF32 ? p.shard : pool.alloc_shape(own, compute);
    if (p.fsdp_sharded()) {
      p.value = view_of(nullptr, p.place.local_shape, compute, pool.device());
      p.grad = view_of(nullptr, p.place.local_shape, DType::kF32, pool.device());
    } else {
      p.value = p.shard_compute;
      p.grad = p.shard_grad;
    }
    params_.push_back(std::move(p));
  }
}

void ParamStore::init(const ModelConfig& m, uint64_t seed) {
  const double out_scale = 1.0 / std::sqrt(2.0 * static_cast<double>(m.n_layers));
  std::vector<float> global;
  for (Param& p : params_) {
    // Draw the global tensor, then keep this rank's piece of it.
    const int64_t n = p.spec.numel();
    global.resize(static_cast<size_t>(n));
    if (p.spec.kind == ParamKind::kNorm) {
      for (int64_t i = 0; i < n; ++i) global[static_cast<size_t>(i)] = 1.0f;
    } else {
      const double stdev = m.init_std * (is_output_projection(p.spec) ? out_scale : 1.0);
      const uint64_t key = stream_key(seed, p.spec.name);
      for (int64_t i = 0; i < n; ++i) {
        global[static_cast<size_t>(i)] = static_cast<float>(stdev * normal_at(key, static_cast<uint64_t>(i)));
      }
    }
    copy_own_piece(p.shard, global.data(), p.place);
  }
  refresh_compute_copies();
}

void ParamStore::refresh_compute_copies() {
  for (Param& p : params_) {
    if (p.shard_compute.data != p.shard.data) ops::cast(p.shard_compute, p.shard);
  }
}

void ParamStore::zero_grads() {
  for (Param& p : params_) zero(p.shard_grad);
}

Param& ParamStore::operator[](const std::string& name) {
  for (Param& p : params_) {
    if (p.spec.name == name) return p;
  }
  throw std::logic_error("no parameter named " + name);
}

const Param& ParamStore::operator[](const std::string& name) const { return const_cast<ParamStore&>(*this)[name]; }

int64_t ParamStore::numel() const {
  int64_t n = 0;
  for (const Param& p : params_) n += p.spec.numel();
  return n;
}

}  // namespace moe
