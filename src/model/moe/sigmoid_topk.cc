// DeepSeek-V3's router: scores = sigmoid(logits); each token takes the K
// experts with the highest score + bias, weighted by their scores (without
// the bias) renormalised to sum 1. The bias has no gradient: after each
// optimizer step it moves towards balance, bias_e += rate * sign(mean_load -
// load_e), loads = the pairs routed to each expert over the step (all
// micro-batches, all data-parallel ranks), before capacity.
#include <vector>

#include "src/model/moe/routers.h"

namespace moe {
namespace {

class SigmoidTopK : public Router {
 public:
  using Router::Router;

  void end_step(const MoEStepStats& step, double bias_rate) override {
    const double mean = mean_load(step.routed_per_expert);
    std::vector<float> bias(static_cast<size_t>(E_));
    download(bias.data(), bias_E_);  // a host sync for device tensors: E floats, once per step
    for (size_t e = 0; e < bias.size(); ++e) {
      const auto load = static_cast<double>(step.routed_per_expert[e]);
      const double sign = load < mean ? 1.0 : (load > mean ? -1.0 : 0.0);
      bias[e] = static_cast<float>(bias[e] + bias_rate * sign);
    }
    upload(bias_E_, bias.data());
  }

 protected:
  void select() override {
    ops::router_forward(topk_idx_NK_, topk_w_NK_, scores_NE_, logits_NE_, bias_E_, ops::RouterKind::kSigmoidTopK);
  }
  void select_backward(const Tensor& dlogits_NE, const Tensor& dtopk_w_NK) override {
    ops::router_backward(dlogits_NE, dtopk_w_NK, topk_idx_NK_, topk_w_NK_, scores_NE_, ops::RouterKind::kSigmoidTopK);
  }
  ops::RouterKind balance_scores() const override { return ops::RouterKind::kSigmoidTopK; }
};

}  // namespace

std::unique_ptr<Router> make_sigmoid_topk_router(const RouterSetup& setup) {
  return std::make_unique<SigmoidTopK>(setup);
}

}  // namespace moe
