#include "src/train/generate.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "src/core/user_error.h"
#include "src/data/prepare.h"
#include "src/model/decoder.h"
#include "src/parallel/mesh.h"
#include "src/checkpoint/checkpoint.h"
#include "src/train/step_runner.h"
#include "src/train/world.h"

namespace moe {
namespace {

std::string token_text(int32_t id) {
  if (id >= 0 && id < 256) return std::string(1, static_cast<char>(id));
  return fmt::format("[{}]", id);
}

}  // namespace

int32_t sample_token(const std::vector<float>& logits, const SamplingOptions& o, double u) {
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  // Most likely first; ties by the lower id, so greedy decoding is one answer.
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  if (o.temperature <= 0) return order.front();
  size_t keep = order.size();
  if (o.top_k > 0) keep = std::min(keep, static_cast<size_t>(o.top_k));
  std::vector<double> p(keep);
  const double max = logits[order.front()];
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += p[i] = std::exp((logits[order[i]] - max) / o.temperature);
  if (o.top_p < 1) {
    double mass = 0;
    size_t i = 0;
    while (i < keep && mass < o.top_p * sum) mass += p[i++];
    keep = std::max<size_t>(i, 1);
    sum = mass;
  }
  double target = u * sum, acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (target < acc) return order[i];
  }
  return order[keep - 1];
}

GenerateResult generate_text(const JobConfig& given, const GenerateOptions& options,
                             const std::function<void(const std::string&)>& on_text) {
  const ModelConfig& m = given.model;
  if (m.vocab_size < kByteVocabSize) {
    throw UserError(
        fmt::format("generate: model.vocab_size = {}: the prompt is read as bytes and needs ids up to "
                    "{} (the byte-level vocabulary of `moe_train prepare`)",
                    m.vocab_size, kByteVocabSize - 1));
  }
  const int64_t length = 1 + static_cast<int64_t>(options.prompt.size()) + options.max_new_tokens;
  if (length > m.max_seq_len) {
    throw UserError(
        fmt::format("generate: the prompt ({} bytes) and --max-new-tokens={} make {} tokens with the "
                    "start of document, more than model.max_seq_len = {}: shorten one of them",
                    options.prompt.size(), options.max_new_tokens, length, m.max_seq_len));
  }
  GenerateResult result;
  result.checkpoint = checkpoint_to_read(given.checkpoint, options.checkpoint, "generate", "sample from");
  // One process holds the whole model: a token's batch is itself.
  JobConfig cfg = given;
  cfg.train.batch_size = 1;
  cfg.train.seq_len = 1;
  cfg.train.grad_accum_steps = 1;
  cfg.distributed = DistributedConfig{};
  cfg.distributed.dp_shard = 1;
  Mesh mesh(Layout{}, single_process_world());
  StepRunner runner(cfg, mesh);
  result.step = runner.load_checkpoint(result.checkpoint).step;
  std::vector<Tensor> biases;  // the routers' selection biases, as the checkpoint left them
  for (MoELayer* layer : runner.model().moe_layers()) biases.push_back(layer->router().bias());
  TensorPool pool(runner.placement().device);
  Decoder decoder(m, runner.params(), biases, length, pool);
  spdlog::info("generating from {} (step {}) on the {}", result.checkpoint, result.step,
               runner.placement().device == Device::kCuda ? "GPU" : "CPU");

  const auto start = std::chrono::steady_clock::now();
  std::mt19937_64 rng(options.sampling.seed);
  auto uniform = [&rng] { return static_cast<double>(rng() >> 11) * 0x1.0p-53; };
  std::vector<int32_t> context = {kEndOfDocumentToken};  // a new document begins
  for (unsigned char c : options.prompt) context.push_back(c);
  int64_t position = 0;
  const std::vector<float>* logits = nullptr;
  for (int32_t token : context) logits = &decoder.step(token, position++);
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    const int32_t next = sample_token(*logits, options.sampling, uniform());
    if (next == kEndOfDocumentToken) {
      result.ended = true;
      break;
    }
    result.tokens.push_back(next);
    on_text(token_text(next));
    if (i + 1 < options.max_new_tokens) logits = &decoder.step(next, position++);
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace moe
