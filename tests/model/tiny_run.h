// A tiny model on one CPU process with one fixed micro-batch of random
// tokens, for tests that compare two models' passes.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/model/transformer.h"

namespace moe::test {

// The model of `overrides` ("section.key=value"), validated.
inline ModelConfig model_of(const std::vector<std::string>& overrides) {
  JobConfig cfg = load_config_text("", "tiny", overrides).cfg;
  validate_config(cfg);
  return cfg.model;
}

struct TinyRun {
  ModelConfig model;
  TensorPool pool;
  ParamStore params;
  Transformer net;

  // B sequences of T tokens; weights from `seed`, tokens and targets from
  // `token_seed`; activations in `compute` (f32, or bf16 copies of fp32 masters).
  TinyRun(const ModelConfig& m, int64_t B, int64_t T, uint64_t seed, unsigned token_seed,
          ActivationCheckpointing checkpointing = ActivationCheckpointing::kNone, DType compute = DType::kF32)
      : model(m),
        params(model, pool, Layout{}, MeshCoord{}, compute),
        net(model, B, T, 0, pool, params, ModelParallel::single_process(), checkpointing) {
    params.init(model, seed);
    std::mt19937 gen(token_seed);
    std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(model.vocab_size - 1));
    for (int64_t i = 0; i < B * T; ++i) {
      net.inputs().i32()[i] = token(gen);
      net.targets().i32()[i] = token(gen);
    }
  }
  // A new step's training pass: the mean token loss (gradients and the step's MoE statistics fresh).
  double train_loss() {
    params.zero_grads();
    net.reset_moe_step_stats();
    return net.forward_backward(1.0f);
  }
};

}  // namespace moe::test
