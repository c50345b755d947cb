// Expert choice (Zhou et al. 2022, "Mixture-of-Experts with Expert Choice
// Routing"): scores = softmax(logits) over the experts, and each expert takes
// the C tokens of the micro-batch that score it highest, C = the capacity
// (capacity_factor x tokens x top_k / num_experts), with weight its score.
// Every expert computes exactly C rows (perfect balance, nothing dropped); a
// token reaches 0 to num_experts experts, and whether it reaches one depends
// on the other tokens of its micro-batch, later ones included.
//
// It is the dispatcher's plan with a priority: every token offers itself to
// every expert (K = num_experts slots, weights the softmax itself, which top-E
// of a softmax renormalised is), and capacity keeps each expert's pairs of
// highest weight (ops::moe_plan with priority) instead of the first ones.
// Evaluation chooses the same way over its micro-batch, with the evaluation
// capacity (0: every expert takes every token). Generation has no batch to
// choose from: each token goes to its moe_top_k experts of highest score,
// weighted by those scores, as training would weight them.
#include <stdexcept>

#include "src/model/moe/routers.h"

namespace moe {
namespace {

class ExpertChoice : public Router {
 public:
  explicit ExpertChoice(const RouterSetup& s) : Router(s) {
    if (K_ == E_) return;
    // Decoding: a row of all E experts by score, whose first K are the token's.
    if (N_ != 1) throw std::logic_error("expert_choice: decoding routes one token at a time");
    all_idx_ = s.pool.alloc({1, E_}, DType::kI32);
    all_w_ = s.pool.alloc({1, E_});
  }

  Tensor capacity_priority() const override { return topk_w_NK_; }

 protected:
  void select() override {
    if (!all_idx_.data) {
      ops::router_forward(topk_idx_NK_, topk_w_NK_, scores_NE_, logits_NE_, Tensor{}, ops::RouterKind::kSoftmaxTopK);
      return;
    }
    ops::router_forward(all_idx_, all_w_, scores_NE_, logits_NE_, Tensor{}, ops::RouterKind::kSoftmaxTopK);
    copy_tensor(topk_idx_NK_, first_k(all_idx_));
    copy_tensor(topk_w_NK_, first_k(all_w_));
  }

  void select_backward(const Tensor& dlogits_NE, const Tensor& dtopk_w_NK) override {
    // weights = softmax (top-E renormalised): the softmax top-k's backward with K = E.
    ops::router_backward(dlogits_NE, dtopk_w_NK, topk_idx_NK_, topk_w_NK_, scores_NE_, ops::RouterKind::kSoftmaxTopK);
  }

  // Every token offers itself to every expert, so the balance losses are
  // constant (load balance 1, zero gradient); the z-loss still acts.
  ops::RouterKind balance_scores() const override { return ops::RouterKind::kSoftmaxTopK; }

 private:
  Tensor all_idx_, all_w_;  // decoding only: [1, E], sorted by score

  // The first K_ entries of a [1, E] row, as [1, K_].
  Tensor first_k(const Tensor& row_1E) const { return row_1E.reshaped({E_, 1}).rows(0, K_).reshaped({1, K_}); }
};

}  // namespace

std::unique_ptr<Router> make_expert_choice_router(const RouterSetup& setup) {
  return std::make_unique<ExpertChoice>(setup);
}

}  // namespace moe
