// What the GPU training tests share: a learnable token file, debug_moe placed
// on a device (full size, or shrunk so that a step is cheap even on the CUDA
// emulator), a sampler over the tokens, and a loop that trains and records.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "src/config/derived.h"
#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/data/batch_sampler.h"
#include "src/data/token_dataset.h"
#include "src/parallel/mesh.h"
#include "src/train/step_runner.h"
#include "tests/data/test_files.h"

namespace moe::test {

// Learnable tokens: "words" of 2-6 ids drawn from 200 word types with a
// skewed (Zipf-like) choice, so that the loss falls steadily for 50 steps.
inline std::string learnable_dataset(const std::string& dir) {
  const std::string data = dir + "/data";
  std::filesystem::create_directories(data);
  std::vector<uint16_t> tokens;
  uint64_t state = 12345;
  auto next = [&state] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<uint32_t>(state >> 33);
  };
  while (tokens.size() < (1u << 18)) {
    const uint32_t word = (next() % 200) * (next() % 200) / 200;  // smaller ids more often
    const uint32_t len = 2 + word % 5;
    for (uint32_t i = 0; i < len; ++i) tokens.push_back(static_cast<uint16_t>(1 + (word * 7 + i * 13) % 250));
    tokens.push_back(0);  // the word separator
  }
  write_token_npy(data + "/tokens.npy", tokens);
  return data;
}

// configs/train/debug_moe.toml at full size, or `small`: the same structure
// (dense and MoE blocks, GQA, top-2 of 4 experts) at dim 64, 2 sequences of 64
// tokens, about 1/200 of the work of a full step.
inline JobConfig debug_moe(const std::string& data, const std::string& device, const std::string& precision,
                           bool small = false) {
  std::vector<std::string> overrides = {"data.dataset_path=" + data};
  if (small) {
    for (const char* o : {"model.dim=64", "model.max_seq_len=64", "train.seq_len=64", "train.batch_size=2"}) {
      overrides.push_back(o);
    }
  }
  JobConfig cfg = load_config_file("configs/train/debug_moe.toml", overrides).cfg;
  validate_config(cfg);
  fill_derived_defaults(cfg);
  // Set after validation: the command line still refuses train.device = "cuda"
  // until the training tests have passed on a GPU (src/config/not_built.cc).
  cfg.train.device = device;
  cfg.train.mixed_precision = precision;
  return cfg;
}

// The token file and the sampler over it that a case trains on.
struct Corpus {
  std::string path;
  JobConfig cfg;  // debug_moe on the CPU, for the shapes and the seed
  TokenDataset data;
  BatchSampler sampler;

  Corpus(const std::string& name, bool small)
      : path(learnable_dataset(fresh_dir(name))),
        cfg(debug_moe(path, "cpu", "fp32", small)),
        data(TokenDataset::open(path, "*.npy", cfg.model.vocab_size)),
        sampler(data, cfg.train.seq_len, cfg.train.batch_size, cfg.train.seed) {}
};

struct Run {
  std::vector<double> loss, grad_norm;
};

inline Run train(const JobConfig& cfg, const BatchSampler& sampler, int64_t steps) {
  Mesh mesh(Layout{}, single_process_world());
  StepRunner runner(cfg, mesh);
  Run r;
  for (int64_t s = 1; s <= steps; ++s) {
    const StepMetrics m = runner.step(s, sampler);
    r.loss.push_back(m.loss);
    r.grad_norm.push_back(m.grad_norm);
  }
  return r;
}

inline double relative(double got, double want) { return std::fabs(got - want) / std::max(std::fabs(want), 1e-12); }

inline double mean(const std::vector<double>& v, size_t from, size_t to) {
  double s = 0;
  for (size_t i = from; i < to; ++i) s += v[i];
  return s / static_cast<double>(to - from);
}

}  // namespace moe::test
