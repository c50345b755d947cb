// Mixtral's router: scores = softmax(logits); each token takes its K highest
// scores, renormalised to sum 1, as the experts' weights. Declared here so
// that a router with the same selection over other logits (noisy_topk)
// derives from it.
#pragma once

#include "src/model/moe/router.h"

namespace moe {

class SoftmaxTopK : public Router {
 public:
  using Router::Router;

 protected:
  void select() override;
  void select_backward(const Tensor& dlogits_NE, const Tensor& dtopk_w_NK) override;
  ops::RouterKind balance_scores() const override { return ops::RouterKind::kSoftmaxTopK; }
};

}  // namespace moe
