#include "src/train/trainer.h"

#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <memory>

#include "src/data/batch_sampler.h"
#include "src/data/default_corpus.h"
#include "src/data/token_dataset.h"
#include "src/model/params.h"
#include "src/model/transformer.h"
#include "src/train/cpu_peak.h"
#include "src/train/dry_run.h"
#include "src/train/lr_schedule.h"
#include "src/train/metrics.h"
#include "src/train/optimizer.h"

namespace moe {
namespace {

std::string cache_dir() {
  if (const char* d = std::getenv("MOE_TRAIN_CACHE"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return std::string(d) + "/moe_train";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/moe_train";
  return ".moe_train_cache";
}

int64_t peak_rss_bytes() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

// Per-step MoE metrics from the layers' step statistics.
void fill_moe_metrics(StepMetrics& m, const std::vector<MoELayer*>& layers) {
  if (layers.empty()) return;
  m.has_moe = true;
  int64_t lo = INT64_MAX, hi = 0, pairs = 0, dropped = 0;
  for (const MoELayer* layer : layers) {
    const MoEStepStats& s = layer->step_stats();
    const double micro = static_cast<double>(std::max<int64_t>(1, s.micro_batches));
    m.aux_loss += s.load_balance / micro;
    m.router_z_loss += s.z_loss / micro;
    m.expert_counts.push_back(s.routed_per_expert);
    for (int64_t c : s.routed_per_expert) {
      lo = std::min(lo, c);
      hi = std::max(hi, c);
    }
    pairs += s.pairs;
    dropped += s.dropped;
  }
  m.expert_balance = hi > 0 ? static_cast<double>(lo) / static_cast<double>(hi) : 0.0;
  m.dropped_frac = pairs > 0 ? static_cast<double>(dropped) / static_cast<double>(pairs) : 0.0;
}

// Entropy of the token frequencies over (up to) the first 16M tokens.
double unigram_entropy(const TokenDataset& data, int64_t vocab_size) {
  const int64_t n = std::min<int64_t>(data.num_tokens(), int64_t{1} << 24);
  std::vector<int64_t> counts(static_cast<size_t>(vocab_size), 0);
  std::vector<int32_t> chunk(1 << 16);
  for (int64_t start = 0; start < n; start += static_cast<int64_t>(chunk.size())) {
    const int64_t count = std::min<int64_t>(static_cast<int64_t>(chunk.size()), n - start);
    data.read(start, count, chunk.data());
    for (int64_t i = 0; i < count; ++i) counts[static_cast<size_t>(chunk[i])] += 1;
  }
  double h = 0;
  for (int64_t c : counts) {
    if (c > 0) h -= static_cast<double>(c) / n * std::log(static_cast<double>(c) / n);
  }
  return h;
}

}  // namespace

double train(const JobConfig& cfg, const Layout& layout) {
  const ModelConfig& m = cfg.model;
  const TrainConfig& t = cfg.train;

  // Data: the configured dataset, else the built-in corpus (real text, prepared once).
  std::string data_path = cfg.data.dataset_path, pattern = cfg.data.file_pattern;
  if (data_path.empty()) {
    data_path = ensure_default_corpus(cache_dir()) + "/train";
    pattern = "*.npy";
    spdlog::info("data.dataset_path is empty: training on the built-in corpus ({})", data_path);
  }
  const TokenDataset train_data = TokenDataset::open(data_path, pattern, m.vocab_size);
  spdlog::info("train data: {}", train_data.describe());
  spdlog::info("train data unigram entropy: {:.4f} nats per token (the loss of a model that ignores context)",
               unigram_entropy(train_data, m.vocab_size));
  const BatchSampler sampler(train_data, t.seq_len, t.batch_size, t.seed);
  std::unique_ptr<TokenDataset> eval_data;
  std::unique_ptr<BatchSampler> eval_sampler;
  if (cfg.eval.enabled) {
    eval_data = std::make_unique<TokenDataset>(
        TokenDataset::open(cfg.eval.dataset_path, cfg.eval.file_pattern, m.vocab_size, "eval"));
    eval_sampler = std::make_unique<BatchSampler>(*eval_data, t.seq_len, t.batch_size, t.seed);
    spdlog::info("eval data: {}", eval_data->describe());
  }

  // Model, planned once for the micro-batch shape.
  TensorPool pool;
  ParamStore params(m, pool);
  params.init(m, static_cast<uint64_t>(t.seed));
  Transformer model(m, t.batch_size, t.seq_len, t.ce_chunk_size, pool, params);
  Optimizer optimizer(cfg.optimizer, params, pool);
  const std::vector<MoELayer*> moe_layers = model.moe_layers();

  const DryRunReport sizes = estimate_dry_run(cfg, layout);
  const double peak_flops = measure_cpu_peak_flops();
  spdlog::info("model: {} parameters ({} active per token), {:.3g} FLOPs per token; CPU peak measured {:.1f} GFLOP/s",
               sizes.total_params, sizes.active_params, sizes.flops_per_token, peak_flops / 1e9);
  MetricsLog log(cfg.metrics.jsonl_path);
  spdlog::warn("checkpointing is not built yet: nothing is saved to {} during this run", cfg.checkpoint.dir);

  const int64_t tokens_per_step = t.batch_size * t.seq_len * t.grad_accum_steps * layout.world();
  const float loss_scale = 1.0f / static_cast<float>(t.grad_accum_steps);
  double last_loss = 0, time_sum = 0;
  for (int64_t step = 1; step <= t.max_steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    params.zero_grads();
    for (MoELayer* layer : moe_layers) layer->reset_step_stats();

    double loss = 0;
    for (int64_t micro = 0; micro < t.grad_accum_steps; ++micro) {
      sampler.fill(step - 1, micro, t.grad_accum_steps, 0, 1, model.inputs().i32(), model.targets().i32());
      loss += model.forward_backward(loss_scale).lm_loss / static_cast<double>(t.grad_accum_steps);
    }
    if (m.moe_gradient_scale) {
      for (MoELayer* layer : moe_layers) layer->scale_expert_gradients();
    }
    const double norm = optimizer.grad_norm();
    const double lr = cfg.optimizer.lr * lr_factor(cfg.scheduler, t.max_steps, step);
    optimizer.step(lr, clip_scale(norm, t.grad_clip_norm), step);
    const double bias_rate = bias_update_rate(m, t.max_steps, step);
    for (MoELayer* layer : moe_layers) layer->update_bias(bias_rate);

    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (step > 1) time_sum += sec;  // step 1 carries one-off warm-up costs
    last_loss = loss;
    if (step == 1 || step % cfg.metrics.log_interval == 0 || step == t.max_steps) {
      StepMetrics sm;
      sm.step = step;
      sm.max_steps = t.max_steps;
      sm.loss = loss;
      sm.lr = lr;
      sm.grad_norm = norm;
      sm.step_time_sec = sec;
      sm.tokens_per_sec = static_cast<double>(tokens_per_step) / sec;
      sm.mfu = sizes.flops_per_token * sm.tokens_per_sec / (peak_flops * static_cast<double>(layout.world()));
      const double mean_step = step > 1 ? time_sum / static_cast<double>(step - 1) : sec;
      sm.eta_sec = mean_step * static_cast<double>(t.max_steps - step);
      sm.peak_bytes = peak_rss_bytes();
      fill_moe_metrics(sm, moe_layers);
      log.write(sm);
    }
    if (eval_sampler && step % cfg.eval.interval == 0) {
      double eval_loss = 0;
      for (int64_t i = 0; i < cfg.eval.steps; ++i) {
        eval_sampler->fill(i, 0, 1, 0, 1, model.inputs().i32(), model.targets().i32());
        eval_loss += model.evaluate() / static_cast<double>(cfg.eval.steps);
      }
      log.write_eval(step, eval_loss);
    }
  }
  return last_loss;
}

}  // namespace moe
