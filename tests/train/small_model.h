// The small model the Hugging Face export and import tests share: dim 16, 2
// layers, 4 heads / 2 KV, vocab 40, ffn hidden 48, plus `overrides`.
#pragma once

#include <string>
#include <vector>

#include "src/config/load.h"
#include "src/config/validate.h"

namespace moe::test {

inline ModelConfig small_model(const std::vector<std::string>& overrides) {
  std::vector<std::string> all = {"model.dim=16",       "model.n_layers=2",    "model.n_heads=4",
                                  "model.n_kv_heads=2", "model.vocab_size=40", "model.ffn_hidden_dim=48"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  JobConfig cfg = load_config_text("", "small", all).cfg;
  validate_config(cfg);
  return cfg.model;
}

}  // namespace moe::test
