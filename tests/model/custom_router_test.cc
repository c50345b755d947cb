// A new router is one file and one line of registration. This file is that
// file: a router the project does not have, "halved_softmax_topk" (softmax
// top-k at temperature 2, scores = softmax(logits / 2)), written as a Router
// subclass from existing ops, and registered with one line. Config
// validation then accepts the name, a model routes with it, and it is held
// to its definition: with gate weights W it computes what softmax_topk
// computes with W / 2, loss and gradients included.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/core/user_error.h"
#include "src/model/moe/routers.h"
#include "src/model/transformer.h"
#include "tests/model/tiny_run.h"

namespace {

class HalvedSoftmaxTopK : public moe::Router {
 public:
  using Router::Router;

 protected:
  void select() override {
    moe::ops::scale_inplace(logits_NE_, 0.5f);
    moe::ops::router_forward(topk_idx_NK_, topk_w_NK_, scores_NE_, logits_NE_, moe::Tensor{},
                             moe::ops::RouterKind::kSoftmaxTopK);
  }
  // dlogits holds the aux losses' gradient with respect to the halved logits;
  // add the weights' and take both back to the gate's logits.
  void select_backward(const moe::Tensor& dlogits_NE, const moe::Tensor& dtopk_w_NK) override {
    moe::ops::router_backward(dlogits_NE, dtopk_w_NK, topk_idx_NK_, topk_w_NK_, scores_NE_,
                              moe::ops::RouterKind::kSoftmaxTopK);
    moe::ops::scale_inplace(dlogits_NE, 0.5f);
  }
  moe::ops::RouterKind balance_scores() const override { return moe::ops::RouterKind::kSoftmaxTopK; }
};

std::unique_ptr<moe::Router> make_halved(const moe::RouterSetup& s) { return std::make_unique<HalvedSoftmaxTopK>(s); }

// The one line of registration.
const bool registered = (moe::register_router("halved_softmax_topk", make_halved), true);

moe::ModelConfig tiny_moe(const std::string& router) {
  return moe::test::model_of({"model.dim=16", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1",
                              "model.vocab_size=29", "model.ffn_hidden_dim=24", "model.max_seq_len=8",
                              "model.init_std=0.3", "model.num_experts=4", "model.moe_top_k=2",
                              "model.moe_aux_loss_weight=0.05", "model.moe_router_z_loss_weight=0.01",
                              "model.moe_router=" + router, "train.seq_len=6"});
}

struct Run : moe::test::TinyRun {
  explicit Run(const std::string& router) : TinyRun(tiny_moe(router), 2, 6, 11, 5) {}
  double loss() { return train_loss() + net.last_aux_loss(); }
};

std::vector<float> values(const moe::Tensor& t) { return {t.f32(), t.f32() + t.numel()}; }

}  // namespace

TEST_CASE("a router registered with one line is a config choice") {
  REQUIRE(registered);
  CHECK(tiny_moe("halved_softmax_topk").moe_router == "halved_softmax_topk");
  CHECK_THROWS_WITH(tiny_moe("thirds_softmax_topk"),
                    Catch::Contains("model.moe_router") && Catch::Contains("halved_softmax_topk"));
  CHECK_THROWS_WITH(moe::register_router("softmax_topk", make_halved), Catch::Contains("already a router"));
}

TEST_CASE("the registered router computes its definition: softmax_topk with the gate halved") {
  Run halved("halved_softmax_topk"), plain("softmax_topk");
  std::vector<std::string> gates;
  for (const moe::Param& p : plain.params.all()) {
    if (p.spec.kind == moe::ParamKind::kRouter) {
      moe::ops::scale_inplace(p.value, 0.5f);  // W / 2: exact in binary floating point
      gates.push_back(p.spec.name);
    }
  }
  REQUIRE(gates.size() == 2);
  const double loss_halved = halved.loss(), loss_plain = plain.loss();
  CHECK(loss_halved == Approx(loss_plain).epsilon(1e-6));
  CHECK(halved.net.last_aux_loss() == Approx(plain.net.last_aux_loss()).epsilon(1e-6));
  for (size_t i = 0; i < halved.params.all().size(); ++i) {
    const moe::Param &h = halved.params.all()[i], &p = plain.params.all()[i];
    INFO(h.spec.name);
    // d/dW of f(W / 2) is half of f's gradient at W / 2.
    const float factor = h.spec.kind == moe::ParamKind::kRouter ? 0.5f : 1.0f;
    const std::vector<float> hg = values(h.grad), pg = values(p.grad);
    for (size_t j = 0; j < hg.size(); ++j) CHECK(hg[j] == Approx(factor * pg[j]).margin(1e-6).epsilon(1e-4));
  }
}
