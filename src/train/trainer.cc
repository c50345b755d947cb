#include "src/train/trainer.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>

#include "src/core/build_info.h"
#include "src/core/cache_dir.h"
#include "src/core/cuda_device.h"
#include "src/core/device_allocator.h"
#include "src/data/batch_sampler.h"
#include "src/data/default_corpus.h"
#include "src/data/token_dataset.h"
#include "src/core/user_error.h"
#include "src/parallel/communicator.h"
#include "src/parallel/launch_env.h"
#include "src/parallel/mesh.h"
#include "src/train/cpu_peak.h"
#include "src/train/dry_run.h"
#include "src/train/human_units.h"
#include "src/kernels/gpu_kernels.h"
#include "src/kernels/kernel_choice.h"
#include "src/train/gpu_check.h"
#include "src/train/gpu_check_cache.h"
#include "src/train/memory_fit.h"
#include "src/train/metrics.h"
#include "src/checkpoint/checkpoint.h"
#include "src/checkpoint/checkpoint_lock.h"
#include "src/train/divergence.h"
#include "src/interop/import_hf.h"
#include "src/train/preemption.h"
#include "src/train/step_runner.h"
#include "src/train/world.h"

namespace moe {
namespace {

// The ranks where `mine` holds ("1, 3"; "" for none), known to every rank.
std::string ranks_where(Communicator& world, bool mine) {
  const int64_t W = world.size();
  std::vector<int32_t> all(static_cast<size_t>(W)), flag = {mine ? 1 : 0};
  world.all_gather(view_of(all.data(), {W}, DType::kI32), view_of(flag.data(), {1}, DType::kI32));
  std::string ranks;
  for (int64_t r = 0; r < W; ++r)
    if (all[static_cast<size_t>(r)]) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
  return ranks;
}

// Before step 1 on CUDA: each rank checks its own GPU, unless a passed check
// is cached; if any rank's check fails, every rank stops (the failing ranks
// log their tables), so no rank waits for a peer that is gone.
void check_gpus_before_training(const JobConfig& cfg, Communicator& world) {
  const int device = select_cuda_device(read_launch_env().local_rank);
  std::string failure;
  if (gpu_check_passed_before(device)) {
    spdlog::info("GPU {} ({}) passed its check before ({}): not checked again", device, cuda_device_description(device),
                 gpu_check_cache_path(device));
    for (const auto& [family, why] : remembered_fallbacks(device)) {
      spdlog::warn("{}: the vendor kernel failed this GPU's check ({}); the builtin kernel runs", family, why);
      kernels::disable_vendor(family, why);
    }
  } else {
    spdlog::info(
        "checking GPU {} ({}) before training: every op against the CPU, CUDA graph replay, 5 training steps "
        "(once per binary, GPU model, driver and runtime; --skip-gpu-check skips it)",
        device, cuda_device_description(device));
    const GpuCheckReport report = check_gpu(cfg, device);
    reset_device_memory_peak();  // the run's figures are its own
    if (report.passed()) {
      spdlog::info("{}", gpu_check_summary(report));
      remember_gpu_check(report);
    } else {
      spdlog::error("the GPU check failed:\n{}", format_gpu_check(report));
      failure = gpu_check_summary(report);
    }
  }
  // Every rank runs the same kernels: a vendor kernel replaced on one GPU is
  // replaced on all, so that the ranks compute alike.
  for (const char* family : kernels::kVendorFamilies) {
    const std::string failed_on = ranks_where(world, !kernels::vendor_disabled(family).empty());
    if (!failed_on.empty() && kernels::vendor_disabled(family).empty()) {
      kernels::disable_vendor(family, std::string("it failed the GPU check on rank ") + failed_on);
    }
  }
  const std::string ranks = ranks_where(world, !failure.empty());
  if (ranks.empty()) return;
  const std::string fix =
      "the GPU, its driver or this build computes wrongly; `moe_train check-gpu` prints the "
      "table, docs/gpu.md says what to try (--skip-gpu-check trains anyway)";
  throw UserError(failure.empty() ? "the GPU check failed on rank " + ranks + " (its log above names the op): " + fix
                                  : failure + "; " + fix);
}

int64_t peak_rss_bytes() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
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

// A user error that one rank raises alone inside a step (a token file only it
// reads, say) would leave the other ranks waiting in the step's collectives
// until the collective timeout: this rank says why and ends the whole job at
// once, with the user-error exit code (MPI_Abort takes every rank down).
template <typename F>
auto stop_all_ranks_on_error(Communicator& world, F&& work) -> decltype(work()) {
  try {
    return work();
  } catch (const UserError& e) {
    if (world.size() == 1) throw;
    std::fprintf(stderr, "moe_train: error: rank %d: %s\n", world.rank(), e.what());
    std::fflush(stderr);
    abort_job(kUserErrorExitCode);
  }
}

// A run that starts from scratch beside complete checkpoints of another run
// (checkpoint.resume = "never") is refused: their rotation and `latest` would
// mix with its own, and a good checkpoint could be lost.
void refuse_fresh_start_beside(const CheckpointConfig& c) {
  const std::vector<CheckpointEntry> there = list_checkpoints(c.dir);
  if (there.empty()) return;
  std::string steps;
  for (size_t i = 0; i < there.size() && i < 4; ++i)
    steps += (i ? ", " : "") + std::filesystem::path(there[i].path).filename().string();
  if (there.size() > 4) steps += fmt::format(", ... ({} in all)", there.size());
  throw UserError(
      fmt::format("checkpoint.dir = \"{}\" holds checkpoints of an earlier run ({}), and "
                  "checkpoint.resume = \"{}\" would start a new run beside them: give this run another "
                  "checkpoint.dir, or move them aside with `moe_train CONFIG --archive-checkpoints` "
                  "(checkpoint.resume = \"auto\" continues them)",
                  c.dir, steps, c.resume.name()));
}

// A new lineage id (16 hex digits), drawn by rank 0 and the same on every rank.
std::string shared_new_lineage(Communicator& world) {
  std::vector<uint32_t> words(2, 0);
  if (world.rank() == 0) {
    std::random_device rd;
    words = {rd(), rd()};
  }
  world.broadcast(view_of(words.data(), {2}, DType::kI32), 0);
  return fmt::format("{:08x}{:08x}", words[0], words[1]);
}

// Where to start from: an explicit load_path, else (resume = "auto") the latest checkpoint in dir.
std::string checkpoint_to_load(const CheckpointConfig& c) {
  if (!c.load_path.empty()) return resolve_step_folder(c.load_path);
  if (c.resume == ResumePolicy::kAuto) return latest_checkpoint(c.dir);
  return "";
}

// Whether `step_dir` lies in checkpoint.dir: only there does this run record
// health (a load_path elsewhere is another run's folder).
bool in_checkpoint_dir(const std::string& step_dir, const CheckpointConfig& c) {
  std::error_code ec;
  const auto parent = std::filesystem::weakly_canonical(std::filesystem::path(step_dir).parent_path(), ec);
  return !ec && parent == std::filesystem::weakly_canonical(c.dir, ec) && !ec;
}

// How to go on after a numerical stop: from the newest healthy checkpoint.
std::string how_to_go_on(const JobConfig& cfg) {
  const std::string healthy = newest_healthy_checkpoint(cfg.checkpoint.dir);
  if (healthy.empty()) {
    return fmt::format(
        "no checkpoint in {} is healthy: start afresh in another checkpoint.dir with a lower "
        "optimizer.lr (now {})",
        cfg.checkpoint.dir, cfg.optimizer.lr);
  }
  return fmt::format(
      "the newest healthy checkpoint is {}, and checkpoint.resume = \"auto\" resumes from it: go on "
      "with a lower optimizer.lr (now {}), or draw other batches from there with another train.seed",
      healthy, cfg.optimizer.lr);
}

// One run at a time in a checkpoint folder: rank 0 holds the lock, and every
// rank stops if it cannot be taken.
std::unique_ptr<CheckpointLock> lock_checkpoint_dir(const CheckpointConfig& c, Communicator& world) {
  std::unique_ptr<CheckpointLock> lock;
  std::string lock_error;
  if (world.rank() == 0) {
    try {
      lock = std::make_unique<CheckpointLock>(c.dir);
    } catch (const UserError& e) {
      lock_error = e.what();
    }
  }
  if (any_rank(world, !lock_error.empty())) {
    throw UserError(lock_error.empty() ? "checkpoint.dir is in use by another run (rank 0 says which)" : lock_error);
  }
  return lock;
}

// The data a run reads: the configured dataset, else the built-in corpus
// (real text, prepared once, by rank 0 while the others wait), its sampler,
// and the evaluation data when enabled.
struct DataSource {
  std::string path, pattern;
};

DataSource train_data_source(const JobConfig& cfg, Communicator& world) {
  if (!cfg.data.dataset_path.empty()) return {cfg.data.dataset_path, cfg.data.file_pattern};
  const std::string corpus = built_in_corpus(world);
  spdlog::info("data.dataset_path is empty: training on the built-in corpus ({}/train)", corpus);
  return {corpus + "/train", "*.npy"};
}

struct RunData {
  RunData(const JobConfig& cfg, Communicator& world)
      : source(train_data_source(cfg, world)),
        train(TokenDataset::open(source.path, source.pattern, cfg.model.vocab_size)),
        sampler(train, cfg.train.seq_len, cfg.train.batch_size, cfg.train.seed) {
    spdlog::info("train data: {}", train.describe());
    if (world.rank() == 0) {  // reads up to 16M tokens: rank 0 alone, so an error here must stop the others
      const double entropy =
          stop_all_ranks_on_error(world, [&] { return unigram_entropy(train, cfg.model.vocab_size); });
      spdlog::info("train data unigram entropy: {:.4f} nats per token (the loss of a model that ignores context)",
                   entropy);
    }
    if (!cfg.eval.enabled) return;
    eval = std::make_unique<TokenDataset>(
        TokenDataset::open(cfg.eval.dataset_path, cfg.eval.file_pattern, cfg.model.vocab_size, "eval"));
    eval_sampler = std::make_unique<BatchSampler>(*eval, cfg.train.seq_len, cfg.train.batch_size, cfg.train.seed);
    spdlog::info("eval data: {}", eval->describe());
  }
  const DataSource source;
  const TokenDataset train;
  const BatchSampler sampler;
  std::unique_ptr<TokenDataset> eval;
  std::unique_ptr<BatchSampler> eval_sampler;
};

// The plan must fit this rank's memory (host RAM or its GPU) before anything
// is allocated; if it does not on any rank, every rank stops.
void require_memory_fit(const TrainConfig& t, const DryRunReport& sizes, Communicator& world) {
  const bool gpu_run = placement_of(t).device == Device::kCuda;
  std::string fit;
  if (auto budget = memory_budget(gpu_run, gpu_run ? select_cuda_device(read_launch_env().local_rank) : -1)) {
    fit = memory_fit_problem(gpu_run ? sizes.gpu_total_bytes : sizes.total_bytes, *budget);
  }
  if (any_rank(world, !fit.empty())) {
    throw UserError(fit.empty() ? "the plan does not fit another rank's memory (its log says why)" : fit);
  }
}

// MFU's denominator per rank, and where it comes from: metrics.peak_tflops,
// else the GPU's bf16 tensor-core peak, else the CPU's sgemm rate measured
// once per machine (rank 0 alone logs MFU, so only it needs the figure).
std::pair<double, std::string> mfu_peak(const MetricsConfig& m, const Placement& place, bool rank0) {
  if (m.peak_tflops > 0) return {m.peak_tflops * 1e12, "metrics.peak_tflops"};
  if (place.device == Device::kCuda) return {cuda_peak_bf16_flops(place.gpu), "the GPU's bf16 spec"};
  if (!rank0) return {0.0, ""};
  const CpuPeak cpu = cpu_peak_flops();
  return {cpu.flops, "the CPU's sgemm rate, " + cpu.source};
}

// Where a run starts: the checkpoint `from` (its weights, moments and
// position), else step 0 with the initial weights, or those of
// --init-from-hf or checkpoint.initial_load_path.
TrainPosition starting_position(const JobConfig& cfg, const TrainOptions& options, const std::string& from,
                                StepRunner& runner, Communicator& world) {
  const ModelConfig& m = cfg.model;
  TrainPosition at;
  if (!from.empty()) {
    if (const std::string router = checkpoint_router(from);
        m.num_experts > 0 && !router.empty() && router != m.moe_router) {
      throw UserError(
          fmt::format("{}: trained with model.moe_router = \"{}\", and this run has \"{}\": resume with the "
                      "router it was trained with, or train this one in another checkpoint.dir",
                      from, router, m.moe_router));
    }
    try {
      at = runner.load_checkpoint(from);
    } catch (const UserError& e) {
      if (!cfg.checkpoint.load_path.empty()) throw;
      // Found by auto-resume: the user may not know a checkpoint was there.
      throw UserError(fmt::format(
          "{}; checkpoint.resume = \"auto\" found it in checkpoint.dir = \"{}\": to start this config afresh, give "
          "it another folder (--checkpoint.dir={}_2), or move the old checkpoints aside first with `moe_train "
          "CONFIG --archive-checkpoints` (nothing is deleted)",
          e.what(), cfg.checkpoint.dir, cfg.checkpoint.dir));
    }
    spdlog::info("resumed from {} at step {} ({} tokens seen)", from, at.step, at.tokens_seen);
    if (at.step >= cfg.train.max_steps) {
      spdlog::warn(
          "train.max_steps = {}: nothing left to train (raise it to go on, or start afresh in another "
          "checkpoint.dir)",
          cfg.train.max_steps);
    }
    if (!options.init_from_hf.empty()) {
      spdlog::info(
          "--init-from-hf={}: not used, the run resumes from {} (start afresh in another checkpoint.dir "
          "to use it)",
          options.init_from_hf, from);
    }
  }
  // The lineage rotation keeps to: the loaded checkpoint's, else a new one
  // (drawn by rank 0, the same on every rank).
  if (at.lineage.empty()) at.lineage = shared_new_lineage(world);
  if (from.empty() && !options.init_from_hf.empty()) {
    import_hf(m, options.init_from_hf, runner.params());
    spdlog::info("initial weights from the Hugging Face checkpoint {}", options.init_from_hf);
  }
  if (const std::string& initial = cfg.checkpoint.initial_load_path; !initial.empty()) {
    if (from.empty()) {
      const TrainPosition source = runner.load_initial_weights(initial);
      spdlog::info("initial weights from {} (its step {}): a new run from step 1", initial, source.step);
    } else {
      spdlog::info("checkpoint.initial_load_path = \"{}\": not used, the run resumes from {}", initial, from);
    }
  }
  return at;
}

// Everything a run reads and writes, as the step loop needs it.
struct Run {
  const JobConfig& cfg;
  const Layout& layout;
  Mesh& mesh;
  StepRunner& runner;
  const RunData& data;
  const DryRunReport& sizes;
  MetricsLog& log;
  const MetricsFiles& files;
  double peak_flops;
  int64_t tokens_per_step;
  TrainPosition at;  // the last saved (or loaded) position
};

// Model FLOPs utilisation at `tokens_per_sec` over the whole job (0 without a peak).
double mfu_at(const Run& r, double tokens_per_sec) {
  if (r.peak_flops <= 0) return 0.0;
  return r.sizes.flops_per_token * tokens_per_sec / (r.peak_flops * static_cast<double>(r.layout.world()));
}

// The run's folders and shape, before step 1.
void log_banner(const Run& r, const std::string& from, const std::string& peak_source) {
  const TrainConfig& t = r.cfg.train;
  const Placement& place = r.runner.placement();
  const int64_t dp = r.mesh.data_parallel().size();
  spdlog::info("run folder: {} (checkpoints{}), {}", r.cfg.checkpoint.dir,
               r.files.jsonl_path.empty() ? "" : ", metrics " + r.files.jsonl_path,
               from.empty() ? "a new run" : fmt::format("resuming {} at step {}", from, r.at.step));
  if (!r.log.tensorboard_file().empty()) spdlog::info("TensorBoard: {}", r.log.tensorboard_file());
  spdlog::info(
      "global batch: {} sequences x {} tokens = {} tokens per step (train.batch_size {} x grad_accum_steps {} x {} "
      "data-parallel rank{}); {} steps to train.max_steps = {}",
      t.batch_size * t.grad_accum_steps * dp, t.seq_len, r.tokens_per_step, t.batch_size, t.grad_accum_steps, dp,
      dp == 1 ? "" : "s", std::max<int64_t>(0, t.max_steps - r.at.step), t.max_steps);
  spdlog::info("model: {} parameters ({} active per token), {:.3g} FLOPs per token", human_count(r.sizes.total_params),
               human_count(r.sizes.active_params), r.sizes.flops_per_token);
  spdlog::info(
      "layout: {} rank{} (dp_replicate={} dp_shard={} ep={} tp={}{}); parameters, gradients and AdamW states: "
      "{:.1f} MiB on this rank",
      r.layout.world(), r.layout.world() == 1 ? "" : "s", r.layout.dp_replicate, r.layout.dp_shard, r.layout.ep,
      r.layout.tp,
      r.layout.pp > 1 ? fmt::format(" pp={}, 1F1B over {} micro-batches", r.layout.pp, t.grad_accum_steps) : "",
      static_cast<double>(r.runner.persistent_state_bytes()) / (1 << 20));
  const std::string fp8_gemms =
      t.mixed_precision == Precision::kFp8
          ? "; dense GEMMs in FP8 (E4M3 weights and activations, E5M2 gradients, current per-tensor scaling)"
          : "";
  if (place.device == Device::kCuda) {
    spdlog::info("device: GPU {} ({}), computing in {} with fp32 master weights{}", place.gpu,
                 cuda_device_description(place.gpu), dtype_name(place.compute), fp8_gemms);
    for (const std::string& line : kernels::gpu_kernel_lines()) spdlog::info("kernel: {}", line);
  } else {
    spdlog::info("device: CPU, computing in fp32{}", fp8_gemms);
  }
  if (t.activation_checkpointing == ActivationCheckpointing::kFull) {
    spdlog::info(
        "activation checkpointing: full (each block keeps its input and runs its forward again before its "
        "backward)");
  } else if (t.activation_checkpointing == ActivationCheckpointing::kSelective) {
    spdlog::info(
        "activation checkpointing: selective (norm outputs, SwiGLU products and permuted tokens are "
        "computed again before each block's backward)");
  }
  if (r.peak_flops > 0) {
    spdlog::info("MFU peak: {} per rank ({})",
                 r.peak_flops >= 1e12 ? fmt::format("{:.1f} TFLOP/s", r.peak_flops / 1e12)
                                      : fmt::format("{:.1f} GFLOP/s", r.peak_flops / 1e9),
                 peak_source);
  }
}

// What a start of the run did, for its summary.
struct RunSpan {
  int64_t first_step = 0, last_step = 0;
  double wall_sec = 0;
  double timed_sec = 0;  // steps first_step + 1 .. last_step (the first one warms up)
  double last_loss = 0, last_eval_loss = NAN;
};

// How the run ended, with where its results are.
void log_summary(const Run& r, const RunSpan& s, const std::string& checkpoint) {
  const int64_t steps = std::max<int64_t>(0, s.last_step - s.first_step + 1);
  std::string line =
      fmt::format("done: {} step{} ({} to {}) in {}, {} tokens ({} in all)", steps, steps == 1 ? "" : "s", s.first_step,
                  s.last_step, human_seconds(s.wall_sec), human_count(static_cast<double>(steps * r.tokens_per_step)),
                  human_count(static_cast<double>(r.at.tokens_seen)));
  if (steps > 0) line += fmt::format("; final train loss {:.4f}", s.last_loss);
  if (!std::isnan(s.last_eval_loss)) line += fmt::format(", eval loss {:.4f}", s.last_eval_loss);
  spdlog::info("{}", line);
  if (s.last_step > s.first_step && s.timed_sec > 0 && r.peak_flops > 0) {
    const double tokens_per_sec =
        static_cast<double>(r.tokens_per_step) * static_cast<double>(s.last_step - s.first_step) / s.timed_sec;
    const double mfu = mfu_at(r, tokens_per_sec);
    spdlog::info("speed: {} tokens/s, MFU {:.1f}% (mean over steps {} to {}; step {} warms up)",
                 human_count(tokens_per_sec), 100.0 * mfu, s.first_step + 1, s.last_step, s.first_step);
  }
  if (!checkpoint.empty()) spdlog::info("checkpoint: {}", checkpoint);
  if (!r.files.jsonl_path.empty()) {
    spdlog::info("metrics: {} (draw it: moe_train plot {})", r.files.jsonl_path, r.files.jsonl_path);
  }
  if (!r.log.tensorboard_file().empty()) spdlog::info("TensorBoard: tensorboard --logdir {}", r.files.tensorboard_dir);
}

// This step's tokens first, before the step changes anything: a data error on
// any rank (a file changed under the run, an id outside the vocabulary) stops
// every rank here, after saving the last finished step.
void read_step_tokens_or_stop(Run& r, int64_t step, const DivergenceWatch& watch) {
  std::string data_error;
  try {
    r.runner.read_step_tokens(step, r.data.sampler);
  } catch (const UserError& e) {
    data_error = e.what();
  }
  Communicator& world = r.mesh.world();
  const std::string ranks = ranks_where(world, !data_error.empty());
  if (ranks.empty()) return;
  std::string saved;
  if (r.at.step < step - 1) {
    r.at = {step - 1, r.at.tokens_seen + r.tokens_per_step * (step - 1 - r.at.step), r.at.lineage, watch.history()};
    saved = "; saved " + save_checkpoint(r.cfg, r.at, r.runner.state_tensors(), world) +
            " (the last finished step) to resume from";
  }
  // One line: rank 0's own error (the command line prints it), else the
  // first failing rank's, and from rank 0 a pointer to it.
  const std::string first = ranks.substr(0, ranks.find(','));
  const bool rank0_failed = first == "0";
  if (!rank0_failed && std::to_string(world.rank()) == first) {
    std::fprintf(stderr, "moe_train: error: rank %s: %s%s\n", first.c_str(), data_error.c_str(), saved.c_str());
    std::fflush(stderr);
  }
  throw UserError(rank0_failed ? data_error + saved
                               : fmt::format("a data error on rank {} stopped the run (rank {}'s line above){}", ranks,
                                             first, saved));
}

// The steps from the one after r.at to train.max_steps (or a preemption).
TrainOutcome train_steps(Run& r, const std::string& from) {
  const TrainConfig& t = r.cfg.train;
  Communicator& world = r.mesh.world();
  const bool rank0 = world.rank() == 0;
  const bool on_gpu = r.runner.placement().device == Device::kCuda;
  install_preemption_handlers();
  // Test hook (documented in docs/training.md): a NaN gradient at this step.
  if (const char* nan_at = std::getenv("MOE_TRAIN_INJECT_NAN_AT_STEP"); nan_at && *nan_at) {
    r.runner.inject_nan_gradient_at(std::atoll(nan_at));
  }
  // Divergence: each step is judged, and judges the checkpoint before it
  // (provisional until then; a loaded one that is not healthy is judged again).
  DivergenceWatch watch(t.spike_factor, t.max_skipped, r.at.losses);
  std::string provisional, last_saved;
  if (!from.empty() && r.at.health != CheckpointHealth::kHealthy && in_checkpoint_dir(from, r.cfg.checkpoint)) {
    provisional = from;
  }

  TrainOutcome outcome;
  double time_sum = 0, last_eval = NAN;
  const auto start = std::chrono::steady_clock::now();
  const int64_t first_step = r.at.step + 1;
  int64_t last_step = r.at.step;
  for (int64_t step = first_step; step <= t.max_steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    read_step_tokens_or_stop(r, step, watch);
    StepMetrics sm = stop_all_ranks_on_error(world, [&] { return r.runner.step(step, r.data.sampler); });
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (step > first_step) time_sum += sec;  // the first step carries one-off warm-up costs
    outcome.last_loss = sm.loss;
    last_step = step;
    // The loss is global: every rank reaches the same verdict; rank 0 records it.
    const std::string unhealthy = watch.judge(step, sm.loss, sm.grad_norm);
    if (!unhealthy.empty() && !sm.skipped) spdlog::warn("{}", unhealthy);
    if (rank0 && !provisional.empty()) record_checkpoint_health(r.cfg.checkpoint, provisional, unhealthy, r.at.lineage);
    provisional.clear();
    if (sm.skipped && t.nan_policy == NanPolicy::kAbort) {
      throw NumericalFault(fmt::format("{} (train.nan_policy = \"abort\"); this step's update was not applied; {}",
                                       unhealthy, how_to_go_on(r.cfg)));
    }
    if (watch.diverged()) {
      throw NumericalFault(
          fmt::format("{}; {} steps in a row skipped or spiking, more than train.max_skipped = {}: "
                      "the run has diverged; {}",
                      unhealthy, watch.unhealthy_in_a_row(), t.max_skipped, how_to_go_on(r.cfg)));
    }
    if (step == first_step || step % r.cfg.metrics.log_interval == 0 || step == t.max_steps || sm.skipped) {
      sm.step_time_sec = sec;
      sm.tokens_per_sec = static_cast<double>(r.tokens_per_step) / sec;
      sm.mfu = mfu_at(r, sm.tokens_per_sec);
      const double mean_step = step > first_step ? time_sum / static_cast<double>(step - first_step) : sec;
      sm.eta_sec = mean_step * static_cast<double>(t.max_steps - step);
      sm.peak_bytes = on_gpu ? device_memory_stats().peak_in_use : peak_rss_bytes();
      r.log.write(sm);
    }
    if (r.data.eval_sampler && step % r.cfg.eval.interval == 0) {
      last_eval =
          stop_all_ranks_on_error(world, [&] { return r.runner.evaluate(*r.data.eval_sampler, r.cfg.eval.steps); });
      r.log.write_eval(step, last_eval);
    }

    const bool preempted = preemption_requested(world);
    if (preempted || step % r.cfg.checkpoint.interval == 0 || step == t.max_steps) {
      r.at = {step, r.at.tokens_seen + r.tokens_per_step * (step - r.at.step), r.at.lineage, watch.history()};
      provisional = last_saved = save_checkpoint(r.cfg, r.at, r.runner.state_tensors(), world);
      spdlog::info("checkpoint saved: {}", provisional);
    }
    if (preempted) {
      spdlog::warn("stopping after step {} on a preemption signal; exit code {} asks for a requeue", step,
                   kRequeueExitCode);
      outcome.exit_code = kRequeueExitCode;
      break;
    }
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  log_summary(r, {first_step, last_step, wall, time_sum, outcome.last_loss, last_eval},
              last_saved.empty() ? from : last_saved);
  return outcome;
}

}  // namespace

TrainOutcome train(const JobConfig& cfg, const Layout& layout, const TrainOptions& options) {
  spdlog::info("moe_train {}", version_line());
  Mesh mesh(layout, make_world(layout, placement_of(cfg.train)), static_cast<double>(cfg.distributed.nccl_timeout_sec));
  Communicator& world = mesh.world();
  if (options.check_gpu && placement_of(cfg.train).device == Device::kCuda) check_gpus_before_training(cfg, world);
  const std::unique_ptr<CheckpointLock> lock = lock_checkpoint_dir(cfg.checkpoint, world);
  if (!options.init_from_hf.empty() && !cfg.checkpoint.initial_load_path.empty()) {
    throw UserError(
        fmt::format("--init-from-hf={} and checkpoint.initial_load_path = \"{}\" both give the initial "
                    "weights: use one of them",
                    options.init_from_hf, cfg.checkpoint.initial_load_path));
  }
  // What to resume from, decided before anything is built.
  const std::string from = checkpoint_to_load(cfg.checkpoint);
  if (from.empty()) refuse_fresh_start_beside(cfg.checkpoint);
  const RunData data(cfg, world);
  const DryRunReport sizes = estimate_dry_run(cfg, layout);
  require_memory_fit(cfg.train, sizes, world);
  // This rank's part of the model, planned once for the micro-batch shape.
  StepRunner runner(cfg, mesh);
  const auto [peak_flops, peak_source] = mfu_peak(cfg.metrics, runner.placement(), world.rank() == 0);
  if (world.rank() == 0 && cfg.metrics.enable_wandb) {
    spdlog::warn(
        "metrics.enable_wandb = true: Weights & Biases is not supported; the metrics go to the JSONL file and, "
        "with metrics.enable_tensorboard = true, to TensorBoard event files");
  }
  const MetricsFiles files = world.rank() == 0 ? metrics_files_of(cfg) : MetricsFiles{};
  MetricsLog log(files);
  const TrainConfig& t = cfg.train;
  Run run{cfg,
          layout,
          mesh,
          runner,
          data,
          sizes,
          log,
          files,
          peak_flops,
          t.batch_size * t.seq_len * t.grad_accum_steps * mesh.data_parallel().size(),
          starting_position(cfg, options, from, runner, world)};
  log_banner(run, from, peak_source);
  return train_steps(run, from);
}

std::string built_in_corpus(Communicator& world) {
  const bool rank0 = world.rank() == 0;
  std::string corpus;
  const std::string fortunes = find_fortunes_dir(std::getenv("MOE_TRAIN_PREFIX"));
  if (rank0) corpus = ensure_default_corpus(cache_dir(), fortunes);
  world.barrier();
  if (!rank0) corpus = ensure_default_corpus(cache_dir(), fortunes);  // prepared by now: only found
  return corpus;
}

TrainDevice auto_device() { return cuda_device_count() > 0 ? TrainDevice::kCuda : TrainDevice::kCpu; }

void resolve_device(TrainConfig& t) {
  const bool automatic = t.device == TrainDevice::kAuto;
  if (automatic) t.device = auto_device();
  if (t.device != TrainDevice::kCuda) return;
  const std::string key = automatic ? "train.device = \"auto\" found a GPU" : "train.device = \"cuda\"";
  if (const std::string missing = cuda_libraries_missing(); !missing.empty()) throw UserError(key + ", but " + missing);
  if (cuda_device_count() == 0) {
    throw UserError(key + ", but no GPU can be used here (" + cuda_unavailable_reason() +
                    "): run on a GPU node (docs/gpu.md), or set train.device = \"cpu\" or \"auto\"");
  }
  if (automatic) spdlog::info("train.device = \"auto\": training on GPU ({})", cuda_device_description(0));
}

}  // namespace moe
