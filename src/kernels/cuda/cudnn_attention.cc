// cuDNN's fused SDPA through its frontend's graph API (header-only). The
// cuDNN library itself is opened at run time (third_party/cuda/cudnn_library.cc),
// like cuBLASLt and NCCL, so a CPU run never needs it.
#include "src/kernels/cuda/cudnn_attention.h"

#include <cudnn_frontend.h>

#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include "src/core/cuda_stream.h"
#include "src/core/stream_graph.h"
#include "src/kernels/cuda/cuda_check.h"
#include "src/kernels/cuda/device_scratch.h"
#include "third_party/cuda/cuda_libraries.h"

namespace moe::cuda::cudnn_attention {
namespace {

namespace fe = cudnn_frontend;

// The graphs' tensor ids, bound to device pointers at each execution.
enum Uid : int64_t { kQ = 1, kK, kV, kOut, kStats, kDout, kDq, kDk, kDv };

// One cuDNN handle per device, created on first use there.
cudnnHandle_t handle() {
  static std::mutex mutex;
  static std::map<int, cudnnHandle_t> handles;
  int device = 0;
  check(cudaGetDevice(&device), "cuDNN attention");
  std::lock_guard<std::mutex> lock(mutex);
  cudnnHandle_t& h = handles[device];
  if (h == nullptr) {
    if (const cudnnStatus_t s = cudnnCreate(&h); s != CUDNN_STATUS_SUCCESS) {
      h = nullptr;
      throw Refused(std::string("cudnnCreate: ") + cudnnGetErrorString(s));
    }
  }
  if (const cudnnStatus_t s = cudnnSetStream(h, stream()); s != CUDNN_STATUS_SUCCESS) {
    throw std::runtime_error(std::string("cudnnSetStream: ") + cudnnGetErrorString(s));
  }
  return h;
}

// Our [B, T, heads, Dh] tensors as cuDNN's [B, heads, T, Dh], in place.
std::vector<int64_t> bhtd_dims(const kernels::AttentionProblem& p, int64_t heads) { return {p.B, heads, p.T, p.Dh}; }
std::vector<int64_t> bhtd_strides(const kernels::AttentionProblem& p, int64_t heads) {
  return {p.T * heads * p.Dh, p.Dh, heads * p.Dh, 1};
}

std::shared_ptr<fe::graph::Tensor_attributes> input(fe::graph::Graph& g, const char* name, Uid uid,
                                                    std::vector<int64_t> dims, std::vector<int64_t> strides) {
  return g.tensor(fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim(dims).set_stride(strides));
}

void output(const std::shared_ptr<fe::graph::Tensor_attributes>& t, Uid uid, std::vector<int64_t> dims,
            std::vector<int64_t> strides) {
  t->set_output(true).set_uid(uid).set_dim(dims).set_stride(strides);
}

std::shared_ptr<fe::graph::Graph> new_graph() {
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  return g;
}

void ok(fe::error_t status, const std::string& what) {
  if (status.is_bad()) throw Refused(what + ": " + status.get_message());
}

struct Plans {
  std::shared_ptr<fe::graph::Graph> forward, backward;
  int64_t workspace = 0;
};

Plans build(const kernels::AttentionProblem& p, bool deterministic) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(p.Dh));
  const std::vector<int64_t> stats_dims = {p.B, p.H, p.T, 1}, stats_strides = {p.H * p.T, p.T, 1, 1};
  cudnnHandle_t h = handle();
  Plans plans;

  plans.forward = new_graph();
  {
    fe::graph::Graph& g = *plans.forward;
    auto q = input(g, "q", kQ, bhtd_dims(p, p.H), bhtd_strides(p, p.H));
    auto k = input(g, "k", kK, bhtd_dims(p, p.G), bhtd_strides(p, p.G));
    auto v = input(g, "v", kV, bhtd_dims(p, p.G), bhtd_strides(p, p.G));
    auto options = fe::graph::SDPA_attributes()
                       .set_name("attention_forward")
                       .set_generate_stats(true)
                       .set_causal_mask(true)
                       .set_attn_scale(scale);
    auto [out, stats] = g.sdpa(q, k, v, options);
    output(out, kOut, bhtd_dims(p, p.H), bhtd_strides(p, p.H));
    output(stats, kStats, stats_dims, stats_strides);
    stats->set_data_type(fe::DataType_t::FLOAT);
    ok(g.build(h, {fe::HeurMode_t::A}), "attention_forward plan (" + p.text() + ")");
  }

  plans.backward = new_graph();
  {
    fe::graph::Graph& g = *plans.backward;
    auto q = input(g, "q", kQ, bhtd_dims(p, p.H), bhtd_strides(p, p.H));
    auto k = input(g, "k", kK, bhtd_dims(p, p.G), bhtd_strides(p, p.G));
    auto v = input(g, "v", kV, bhtd_dims(p, p.G), bhtd_strides(p, p.G));
    auto out = input(g, "out", kOut, bhtd_dims(p, p.H), bhtd_strides(p, p.H));
    auto dout = input(g, "dout", kDout, bhtd_dims(p, p.H), bhtd_strides(p, p.H));
    auto stats = input(g, "stats", kStats, stats_dims, stats_strides);
    stats->set_data_type(fe::DataType_t::FLOAT);
    auto options = fe::graph::SDPA_backward_attributes()
                       .set_name("attention_backward")
                       .set_causal_mask(true)
                       .set_attn_scale(scale)
                       .set_deterministic_algorithm(deterministic);
    auto [dq, dk, dv] = g.sdpa_backward(q, k, v, out, dout, stats, options);
    output(dq, kDq, bhtd_dims(p, p.H), bhtd_strides(p, p.H));
    output(dk, kDk, bhtd_dims(p, p.G), bhtd_strides(p, p.G));
    output(dv, kDv, bhtd_dims(p, p.G), bhtd_strides(p, p.G));
    ok(g.build(h, {fe::HeurMode_t::A}), "attention_backward plan (" + p.text() + ")");
  }

  int64_t fwd = 0, bwd = 0;
  ok(plans.forward->get_workspace_size(fwd), "attention_forward workspace");
  ok(plans.backward->get_workspace_size(bwd), "attention_backward workspace");
  plans.workspace = std::max(fwd, bwd);
  return plans;
}

using Key = std::tuple<int, kernels::AttentionProblem, bool>;  // device, shape, deterministic

std::mutex plans_mutex;
std::map<Key, Plans>& plan_cache() {
  static std::map<Key, Plans> cache;
  return cache;
}

// The workspace every prepared shape shares (one runs at a time, on one stream).
DeviceScratch& workspace() {
  static DeviceScratch scratch("cuDNN attention workspace");
  return scratch;
}

Key key_of(const Tensor& q, const Tensor& k, bool deterministic) {
  int device = 0;
  check(cudaGetDevice(&device), "cuDNN attention");
  kernels::AttentionProblem p;
  p.B = q.size(0), p.T = q.size(1), p.H = q.size(2), p.G = k.size(2), p.Dh = q.size(3), p.dtype = q.dtype;
  return {device, p, deterministic};
}

// The plans of a shape, prepared before (or now, while no CUDA graph is alive).
const Plans& plans_for(const Key& key) {
  {
    std::lock_guard<std::mutex> lock(plans_mutex);
    const auto it = plan_cache().find(key);
    if (it != plan_cache().end()) return it->second;
  }
  if (StreamGraph::alive() > 0) {
    throw std::logic_error("cuDNN attention at " + std::get<1>(key).text() +
                           ": not prepared when the model was built, and a CUDA graph is alive");
  }
  prepare(std::get<1>(key), std::get<2>(key));
  std::lock_guard<std::mutex> lock(plans_mutex);
  return plan_cache().at(key);
}

void execute(const fe::graph::Graph& graph, std::unordered_map<int64_t, void*> pack, int64_t workspace_bytes,
             const std::string& what) {
  void* ws = workspace().get(static_cast<size_t>(std::max<int64_t>(workspace_bytes, 1)), what);
  fe::error_t status = graph.execute(handle(), pack, ws);
  if (status.is_bad()) throw std::runtime_error(what + ": cuDNN: " + status.get_message());
}

}  // namespace

bool in_build() { return true; }

int64_t loaded_version() { return cuda_libraries::cudnn_version(); }

int64_t prepare(const kernels::AttentionProblem& p, bool deterministic) {
  if (loaded_version() == 0) throw Refused("libcudnn.so.9 was not found");
  int device = 0;
  check(cudaGetDevice(&device), "cuDNN attention");
  const Key key{device, p, deterministic};
  std::lock_guard<std::mutex> lock(plans_mutex);
  auto it = plan_cache().find(key);
  if (it == plan_cache().end()) it = plan_cache().emplace(key, build(p, deterministic)).first;
  workspace().get(static_cast<size_t>(std::max<int64_t>(it->second.workspace, 1)), "cuDNN attention " + p.text());
  return it->second.workspace;
}

void forward(const Tensor& out, const Tensor& lse_BHT, const Tensor& q, const Tensor& k, const Tensor& v,
             bool deterministic) {
  const Plans& plans = plans_for(key_of(q, k, deterministic));
  execute(*plans.forward, {{kQ, q.data}, {kK, k.data}, {kV, v.data}, {kOut, out.data}, {kStats, lse_BHT.data}},
          plans.workspace, "attention_forward (cuDNN)");
}

void backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout, const Tensor& q,
              const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse_BHT, bool deterministic) {
  const Plans& plans = plans_for(key_of(q, k, deterministic));
  execute(*plans.backward,
          {{kQ, q.data},
           {kK, k.data},
           {kV, v.data},
           {kOut, out.data},
           {kDout, dout.data},
           {kStats, lse_BHT.data},
           {kDq, dq.data},
           {kDk, dk.data},
           {kDv, dv.data}},
          plans.workspace, "attention_backward (cuDNN)");
}

}  // namespace moe::cuda::cudnn_attention
