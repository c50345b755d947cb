// Noisy top-k gating (Shazeer et al. 2017, "Outrageously Large Neural
// Networks"): in training the logits are
//   H = x Wg^T + z * softplus(x Wn^T),
// z standard normal per token and expert (the micro-batch's counter noise,
// drawn again in backward), Wn learned (the MoE block's gate_noise.weight);
// each token takes its K largest H, weighted by the softmax over them: the
// selection of softmax_topk (Mixtral's router), over H. The balance and z
// losses see H, which is what routes. Evaluation and generation route the
// clean logits x Wg^T: there noisy_topk is softmax_topk.
#include "src/model/layer_common.h"
#include "src/model/moe/routers.h"
#include "src/model/moe/softmax_topk.h"
#include "src/model/param_names.h"

namespace moe {
namespace {

class NoisyTopK : public SoftmaxTopK {
 public:
  explicit NoisyTopK(const RouterSetup& s)
      : SoftmaxTopK(s),
        noise_gate_(s.params[param_name::router_noise_gate(s.layer)]),
        noise_key_(s.noise_key),
        stream_(noise_stream(s.layer, NoiseUse::kRouterNoise)) {
    noise_logits_NE_ = s.saved.get(SavedKind::kProduct, {N_, E_}, DType::kF32);
    dnoise_logits_NE_ = s.scratch.get(ScratchRole::kMoeDnoiseLogits, {N_, E_}, DType::kF32);
    if (s.act != DType::kF32) dnoise_logits_act_NE_ = s.scratch.get(ScratchRole::kMoeDnoiseLogitsAct, {N_, E_}, s.act);
  }

 protected:
  void add_to_logits(const Tensor& input_ND) override {
    ops::matmul_forward(noise_logits_NE_, input_ND, noise_gate_.value);
    ops::router_noise_forward(logits_NE_, noise_logits_NE_, noise_key_, stream_);
  }
  void add_to_logits_backward(const Tensor& dinput_ND, const Tensor& dlogits_NE, const Tensor& input_ND) override {
    ops::router_noise_backward(dnoise_logits_NE_, dlogits_NE, noise_logits_NE_, noise_key_, stream_);
    const Tensor dnoise = for_gemm(dnoise_logits_NE_, dnoise_logits_act_NE_);
    ops::matmul_backward(dinput_ND, noise_gate_.grad, dnoise, input_ND, noise_gate_.value);
  }

 private:
  Param& noise_gate_;
  const Tensor& noise_key_;
  uint64_t stream_;
  Tensor noise_logits_NE_, dnoise_logits_NE_, dnoise_logits_act_NE_;
};

}  // namespace

std::unique_ptr<Router> make_noisy_topk_router(const RouterSetup& setup) { return std::make_unique<NoisyTopK>(setup); }

}  // namespace moe
