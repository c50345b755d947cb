#include "src/model/moe/softmax_topk.h"

#include "src/model/moe/routers.h"

namespace moe {

void SoftmaxTopK::select() {
  ops::router_forward(topk_idx_NK_, topk_w_NK_, scores_NE_, logits_NE_, Tensor{}, ops::RouterKind::kSoftmaxTopK);
}

void SoftmaxTopK::select_backward(const Tensor& dlogits_NE, const Tensor& dtopk_w_NK) {
  ops::router_backward(dlogits_NE, dtopk_w_NK, topk_idx_NK_, topk_w_NK_, scores_NE_, ops::RouterKind::kSoftmaxTopK);
}

std::unique_ptr<Router> make_softmax_topk_router(const RouterSetup& setup) {
  return std::make_unique<SoftmaxTopK>(setup);
}

}  // namespace moe
