// Mixtral's router: scores = softmax(logits); each token takes its K highest
// scores, renormalised to sum 1, as the experts' weights.
#include "src/model/moe/routers.h"

namespace moe {
namespace {

class SoftmaxTopK : public Router {
 public:
  using Router::Router;

 protected:
  void select() override {
    ops::router_forward(topk_idx_NK_, topk_w_NK_, scores_NE_, logits_NE_, Tensor{}, ops::RouterKind::kSoftmaxTopK);
  }
  void select_backward(const Tensor& dlogits_NE, const Tensor& dtopk_w_NK) override {
    ops::router_backward(dlogits_NE, dtopk_w_NK, topk_idx_NK_, topk_w_NK_, scores_NE_, ops::RouterKind::kSoftmaxTopK);
  }
  ops::RouterKind balance_scores() const override { return ops::RouterKind::kSoftmaxTopK; }
};

}  // namespace

std::unique_ptr<Router> make_softmax_topk_router(const RouterSetup& setup) {
  return std::make_unique<SoftmaxTopK>(setup);
}

}  // namespace moe
