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
#include "src/kernels/gpu_kernels.h"
#include "src/kernels/kernel_choice.h"
#include "src/train/gpu_check.h"
#include "src/train/gpu_check_cache.h"
#include "src/train/memory_fit.h"
#include "src/train/metrics.h"
#include "src/train/checkpoint.h"
#include "src/train/checkpoint_lock.h"
#include "src/train/divergence.h"
#include "src/train/import_hf.h"
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
                  c.dir, steps, c.resume));
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
  if (c.resume == "auto") return latest_checkpoint(c.dir);
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

}  // namespace

TrainOutcome train(const JobConfig& cfg, const Layout& layout, const TrainOptions& options) {
  const std::string& init_from_hf = options.init_from_hf;
  const ModelConfig& m = cfg.model;
  const TrainConfig& t = cfg.train;
  spdlog::info("moe_train {}", version_line());
  Mesh mesh(layout, make_world(layout, placement_of(t)), static_cast<double>(cfg.distributed.nccl_timeout_sec));
  const bool rank0 = mesh.world().rank() == 0;
  if (options.check_gpu && placement_of(t).device == Device::kCuda) check_gpus_before_training(cfg, mesh.world());
  // One run at a time in a checkpoint folder (rank 0 holds the lock; every rank stops if it cannot).
  std::unique_ptr<CheckpointLock> lock;
  std::string lock_error;
  if (rank0) {
    try {
      lock = std::make_unique<CheckpointLock>(cfg.checkpoint.dir);
    } catch (const UserError& e) {
      lock_error = e.what();
    }
  }
  if (any_rank(mesh.world(), !lock_error.empty())) {
    throw UserError(lock_error.empty() ? "checkpoint.dir is in use by another run (rank 0 says which)" : lock_error);
  }
  if (!init_from_hf.empty() && !cfg.checkpoint.initial_load_path.empty()) {
    throw UserError(
        fmt::format("--init-from-hf={} and checkpoint.initial_load_path = \"{}\" both give the initial "
                    "weights: use one of them",
                    init_from_hf, cfg.checkpoint.initial_load_path));
  }
  // What to resume from, decided before anything is built.
  const std::string from = checkpoint_to_load(cfg.checkpoint);
  if (from.empty()) refuse_fresh_start_beside(cfg.checkpoint);

  // Data: the configured dataset, else the built-in corpus (real text,
  // prepared once, by rank 0 while the others wait).
  std::string data_path = cfg.data.dataset_path, pattern = cfg.data.file_pattern;
  if (data_path.empty()) {
    std::string corpus;
    const std::string fortunes = find_fortunes_dir(std::getenv("MOE_TRAIN_PREFIX"));
    if (rank0) corpus = ensure_default_corpus(cache_dir(), fortunes);
    mesh.world().barrier();
    if (!rank0) corpus = ensure_default_corpus(cache_dir(), fortunes);  // prepared by now: only found
    data_path = corpus + "/train";
    pattern = "*.npy";
    spdlog::info("data.dataset_path is empty: training on the built-in corpus ({})", data_path);
  }
  const TokenDataset train_data = TokenDataset::open(data_path, pattern, m.vocab_size);
  spdlog::info("train data: {}", train_data.describe());
  if (rank0) {  // reads up to 16M tokens: rank 0 alone, so an error here must stop the others
    const double entropy =
        stop_all_ranks_on_error(mesh.world(), [&] { return unigram_entropy(train_data, m.vocab_size); });
    spdlog::info("train data unigram entropy: {:.4f} nats per token (the loss of a model that ignores context)",
                 entropy);
  }
  const BatchSampler sampler(train_data, t.seq_len, t.batch_size, t.seed);
  std::unique_ptr<TokenDataset> eval_data;
  std::unique_ptr<BatchSampler> eval_sampler;
  if (cfg.eval.enabled) {
    eval_data = std::make_unique<TokenDataset>(
        TokenDataset::open(cfg.eval.dataset_path, cfg.eval.file_pattern, m.vocab_size, "eval"));
    eval_sampler = std::make_unique<BatchSampler>(*eval_data, t.seq_len, t.batch_size, t.seed);
    spdlog::info("eval data: {}", eval_data->describe());
  }

  // The plan must fit this rank's memory (host RAM or its GPU) before
  // anything is allocated; if it does not on any rank, every rank stops.
  const DryRunReport sizes = estimate_dry_run(cfg, layout);
  {
    const bool gpu_run = placement_of(t).device == Device::kCuda;
    std::string fit;
    if (auto budget = memory_budget(gpu_run, gpu_run ? select_cuda_device(read_launch_env().local_rank) : -1)) {
      fit = memory_fit_problem(gpu_run ? sizes.gpu_total_bytes : sizes.total_bytes, *budget);
    }
    if (any_rank(mesh.world(), !fit.empty())) {
      throw UserError(fit.empty() ? "the plan does not fit another rank's memory (its log says why)" : fit);
    }
  }
  // This rank's part of the model, planned once for the micro-batch shape.
  StepRunner runner(cfg, mesh);
  const bool on_gpu = runner.placement().device == Device::kCuda;
  // MFU's denominator: the GPU's bf16 tensor-core peak, or the CPU's measured sgemm rate.
  const double peak_flops = on_gpu ? cuda_peak_bf16_flops(runner.placement().gpu) : measure_cpu_peak_flops();
  if (on_gpu) {
    spdlog::info("device: GPU {} ({}), computing in {} with fp32 master weights; bf16 peak {:.0f} TFLOP/s",
                 runner.placement().gpu, cuda_device_description(runner.placement().gpu),
                 dtype_name(runner.placement().compute), peak_flops / 1e12);
  }
  if (on_gpu) {
    for (const std::string& line : kernels::gpu_kernel_lines()) spdlog::info("kernel: {}", line);
  }
  spdlog::info("model: {} parameters ({} active per token), {:.3g} FLOPs per token; {} peak {:.1f} GFLOP/s",
               sizes.total_params, sizes.active_params, sizes.flops_per_token, on_gpu ? "GPU" : "CPU measured",
               peak_flops / 1e9);
  if (layout.world() > 1) {
    spdlog::info(
        "layout: dp_replicate={} dp_shard={} ep={} tp={} ({} ranks, {} read different data); "
        "parameters, gradients and AdamW states: {:.1f} MiB on this rank",
        layout.dp_replicate, layout.dp_shard, layout.ep, layout.tp, layout.world(), mesh.data_parallel().size(),
        static_cast<double>(runner.persistent_state_bytes()) / (1 << 20));
  }
  if (rank0 && cfg.metrics.enable_wandb) {
    spdlog::warn(
        "metrics.enable_wandb = true: Weights & Biases is not supported; the metrics go to the JSONL file and, "
        "with metrics.enable_tensorboard = true, to TensorBoard event files");
  }
  MetricsLog log(rank0 ? metrics_files_of(cfg) : MetricsFiles{});

  const int64_t tokens_per_step = t.batch_size * t.seq_len * t.grad_accum_steps * mesh.data_parallel().size();
  const std::vector<StateTensor> state = runner.state_tensors();
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
    if (at.step >= t.max_steps) {
      spdlog::warn(
          "train.max_steps = {}: nothing left to train (raise it to go on, or start afresh in another "
          "checkpoint.dir)",
          t.max_steps);
    }
    if (!init_from_hf.empty()) {
      spdlog::info(
          "--init-from-hf={}: not used, the run resumes from {} (start afresh in another checkpoint.dir "
          "to use it)",
          init_from_hf, from);
    }
  }
  // The lineage rotation keeps to: the loaded checkpoint's, else a new one
  // (drawn by rank 0, the same on every rank).
  if (at.lineage.empty()) at.lineage = shared_new_lineage(mesh.world());
  if (from.empty() && !init_from_hf.empty()) {
    import_hf(m, init_from_hf, runner.params());
    spdlog::info("initial weights from the Hugging Face checkpoint {}", init_from_hf);
  }
  if (const std::string& initial = cfg.checkpoint.initial_load_path; !initial.empty()) {
    if (from.empty()) {
      const TrainPosition source = runner.load_initial_weights(initial);
      spdlog::info("initial weights from {} (its step {}): a new run from step 1", initial, source.step);
    } else {
      spdlog::info("checkpoint.initial_load_path = \"{}\": not used, the run resumes from {}", initial, from);
    }
  }
  install_preemption_handlers();
  // Test hook (documented in docs/training.md): a NaN gradient at this step.
  if (const char* nan_at = std::getenv("MOE_TRAIN_INJECT_NAN_AT_STEP"); nan_at && *nan_at) {
    runner.inject_nan_gradient_at(std::atoll(nan_at));
  }
  // Divergence: each step is judged, and judges the checkpoint before it
  // (provisional until then; a loaded one that is not healthy is judged again).
  DivergenceWatch watch(t.spike_factor, t.max_skipped, at.losses);
  std::string provisional;
  if (!from.empty() && at.health != CheckpointHealth::kHealthy && in_checkpoint_dir(from, cfg.checkpoint)) {
    provisional = from;
  }

  TrainOutcome outcome;
  double time_sum = 0;
  const int64_t first_step = at.step + 1;
  for (int64_t step = first_step; step <= t.max_steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    // This step's tokens first, before the step changes anything: a data
    // error on any rank (a file changed under the run, an id outside the
    // vocabulary) stops every rank here, after saving the last finished step.
    std::string data_error;
    try {
      runner.read_step_tokens(step, sampler);
    } catch (const UserError& e) {
      data_error = e.what();
    }
    if (const std::string ranks = ranks_where(mesh.world(), !data_error.empty()); !ranks.empty()) {
      std::string saved;
      if (at.step < step - 1) {
        at = {step - 1, at.tokens_seen + tokens_per_step * (step - 1 - at.step), at.lineage, watch.history()};
        saved = "; saved " + save_checkpoint(cfg, at, state, mesh.world()) + " (the last finished step) to resume from";
      }
      // One line: rank 0's own error (the command line prints it), else the
      // first failing rank's, and from rank 0 a pointer to it.
      const std::string first = ranks.substr(0, ranks.find(','));
      const bool rank0_failed = first == "0";
      if (!rank0_failed && std::to_string(mesh.world().rank()) == first) {
        std::fprintf(stderr, "moe_train: error: rank %s: %s%s\n", first.c_str(), data_error.c_str(), saved.c_str());
        std::fflush(stderr);
      }
      throw UserError(rank0_failed ? data_error + saved
                                   : fmt::format("a data error on rank {} stopped the run (rank {}'s line above){}",
                                                 ranks, first, saved));
    }
    StepMetrics sm = stop_all_ranks_on_error(mesh.world(), [&] { return runner.step(step, sampler); });
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (step > first_step) time_sum += sec;  // the first step carries one-off warm-up costs
    outcome.last_loss = sm.loss;
    // The loss is global: every rank reaches the same verdict; rank 0 records it.
    const std::string unhealthy = watch.judge(step, sm.loss, sm.grad_norm);
    if (!unhealthy.empty() && !sm.skipped) spdlog::warn("{}", unhealthy);
    if (rank0 && !provisional.empty()) record_checkpoint_health(cfg.checkpoint, provisional, unhealthy, at.lineage);
    provisional.clear();
    if (sm.skipped && t.nan_policy == "abort") {
      throw NumericalFault(fmt::format("{} (train.nan_policy = \"abort\"); this step's update was not applied; {}",
                                       unhealthy, how_to_go_on(cfg)));
    }
    if (watch.diverged()) {
      throw NumericalFault(
          fmt::format("{}; {} steps in a row skipped or spiking, more than train.max_skipped = {}: "
                      "the run has diverged; {}",
                      unhealthy, watch.unhealthy_in_a_row(), t.max_skipped, how_to_go_on(cfg)));
    }
    if (step == first_step || step % cfg.metrics.log_interval == 0 || step == t.max_steps || sm.skipped) {
      sm.step_time_sec = sec;
      sm.tokens_per_sec = static_cast<double>(tokens_per_step) / sec;
      sm.mfu = peak_flops > 0
                   ? sizes.flops_per_token * sm.tokens_per_sec / (peak_flops * static_cast<double>(layout.world()))
                   : 0.0;
      const double mean_step = step > first_step ? time_sum / static_cast<double>(step - first_step) : sec;
      sm.eta_sec = mean_step * static_cast<double>(t.max_steps - step);
      sm.peak_bytes = on_gpu ? device_memory_stats().peak_in_use : peak_rss_bytes();
      log.write(sm);
    }
    if (eval_sampler && step % cfg.eval.interval == 0) {
      log.write_eval(
          step, stop_all_ranks_on_error(mesh.world(), [&] { return runner.evaluate(*eval_sampler, cfg.eval.steps); }));
    }

    const bool preempted = preemption_requested(mesh.world());
    if (preempted || step % cfg.checkpoint.interval == 0 || step == t.max_steps) {
      at = {step, at.tokens_seen + tokens_per_step * (step - at.step), at.lineage, watch.history()};
      provisional = save_checkpoint(cfg, at, state, mesh.world());
      spdlog::info("checkpoint saved: {}", provisional);
    }
    if (preempted) {
      spdlog::warn("stopping after step {} on a preemption signal; exit code {} asks for a requeue", step,
                   kRequeueExitCode);
      outcome.exit_code = kRequeueExitCode;
      break;
    }
  }
  return outcome;
}

const char* auto_device() { return cuda_device_count() > 0 ? "cuda" : "cpu"; }

void resolve_device(TrainConfig& t) {
  const bool automatic = t.device == "auto";
  if (automatic) t.device = auto_device();
  if (t.device != "cuda") return;
  const std::string key = automatic ? "train.device = \"auto\" found a GPU" : "train.device = \"cuda\"";
  if (const std::string missing = cuda_libraries_missing(); !missing.empty()) throw UserError(key + ", but " + missing);
  if (cuda_device_count() == 0) {
    throw UserError(key + ", but no GPU can be used here (" + cuda_unavailable_reason() +
                    "): run on a GPU node (docs/gpu.md), or set train.device = \"cpu\" or \"auto\"");
  }
  if (automatic) spdlog::info("train.device = \"auto\": training on GPU ({})", cuda_device_description(0));
}

}  // namespace moe
