// The whole model on a GPU against the CPU reference: configs/train/debug_moe.toml
// (dense and MoE blocks, GQA, top-2 of 4 experts) trained 50 steps on the same
// tokens by one StepRunner on the CPU (fp32), one on the GPU in fp32, and one
// on the GPU in bf16 with fp32 masters (on one GPU, StepRunner replays each
// micro-batch as a CUDA graph). Also: a graph replay computes what the eager
// pass does, bit for bit; a step allocates no device memory once warm; a
// checkpoint taken on the GPU resumes bit for bit.
//
// Tolerances on the loss, relative to the CPU's. Training amplifies any
// round-off: while the loss falls fastest (steps ~10-15, lr at its peak, a
// spike at step 13 on this data) a difference of 1e-5 grows ~1000-fold in a
// few steps, then shrinks again. So the first steps are held tightly, every
// step loosely, and the curve by 10-step means. Measured on the CPU with the
// bf16 host path (ops.h) against fp32, same data (dev/scratch was used, not
// kept): steps 1-5 within 5e-5, the worst single step 7.9e-2 (step 13), 10-
// step means within 4.6e-3, steps 41-50 within 1.9e-3.
//                      steps 1-5   any step   10-step means   steps 41-50
// - GPU fp32:          1e-4        2e-2       5e-3            5e-3
//   (the same math in another summation order: cuBLASLt, tiled attention)
// - GPU bf16:          2e-3        0.15       2e-2            1e-2
//   (bf16 activations and weight copies, P and dS rounded in attention)
// The losses are printed, so that a GPU session can record them.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "src/config/derived.h"
#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/core/cuda_device.h"
#include "src/core/device_allocator.h"
#include "src/data/batch_sampler.h"
#include "src/data/token_dataset.h"
#include "src/parallel/mesh.h"
#include "src/train/checkpoint.h"
#include "src/model/params.h"
#include "src/model/transformer.h"
#include "src/train/optimizer.h"
#include "src/train/step_runner.h"
#include "tests/data/test_files.h"

namespace {

constexpr int64_t kSteps = 50;

// Learnable tokens: "words" of 2-6 ids drawn from 200 word types with a
// skewed (Zipf-like) choice, so that the loss falls steadily for 50 steps.
std::string dataset(const std::string& dir) {
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
  moe::test::write_token_npy(data + "/tokens.npy", tokens);
  return data;
}

moe::JobConfig debug_moe(const std::string& data, const std::string& device, const std::string& precision) {
  moe::JobConfig cfg = moe::load_config_file("configs/train/debug_moe.toml", {"data.dataset_path=" + data}).cfg;
  moe::validate_config(cfg);
  moe::fill_derived_defaults(cfg);
  // Set after validation: the command line still refuses train.device = "cuda"
  // until this test has passed on a GPU (src/config/not_built.cc).
  cfg.train.device = device;
  cfg.train.mixed_precision = precision;
  return cfg;
}

// The token file and the sampler over it that a case trains on.
struct Corpus {
  std::string path;
  moe::JobConfig cfg;  // debug_moe on the CPU, for the shapes and the seed
  moe::TokenDataset data;
  moe::BatchSampler sampler;

  explicit Corpus(const std::string& name)
      : path(dataset(moe::test::fresh_dir(name))),
        cfg(debug_moe(path, "cpu", "fp32")),
        data(moe::TokenDataset::open(path, "*.npy", cfg.model.vocab_size)),
        sampler(data, cfg.train.seq_len, cfg.train.batch_size, cfg.train.seed) {}
};

struct Run {
  std::vector<double> loss, grad_norm;
};

Run train(const moe::JobConfig& cfg, const moe::BatchSampler& sampler, int64_t steps) {
  moe::Mesh mesh(moe::Layout{}, moe::single_process_world());
  moe::StepRunner runner(cfg, mesh);
  Run r;
  for (int64_t s = 1; s <= steps; ++s) {
    const moe::StepMetrics m = runner.step(s, sampler);
    r.loss.push_back(m.loss);
    r.grad_norm.push_back(m.grad_norm);
  }
  return r;
}

double relative(double got, double want) { return std::fabs(got - want) / std::max(std::fabs(want), 1e-12); }

double mean(const std::vector<double>& v, size_t from, size_t to) {
  double s = 0;
  for (size_t i = from; i < to; ++i) s += v[i];
  return s / static_cast<double>(to - from);
}

}  // namespace

TEST_CASE("debug_moe on the GPU follows the CPU's loss curve over 50 steps, in fp32 and in bf16", "[gpu][train]") {
  REQUIRE(moe::cuda_device_count() > 0);
  const Corpus corpus("train_gpu");
  const Run cpu = train(corpus.cfg, corpus.sampler, kSteps);
  const Run gpu32 = train(debug_moe(corpus.path, "cuda", "fp32"), corpus.sampler, kSteps);
  const Run gpu16 = train(debug_moe(corpus.path, "cuda", "bf16"), corpus.sampler, kSteps);

  std::printf("step  cpu_fp32   gpu_fp32   gpu_bf16   (loss; grad norm cpu / gpu_fp32 / gpu_bf16)\n");
  for (int64_t s = 0; s < kSteps; ++s) {
    const size_t i = static_cast<size_t>(s);
    std::printf("%4ld  %.6f  %.6f  %.6f   %.4f / %.4f / %.4f\n", static_cast<long>(s + 1), cpu.loss[i], gpu32.loss[i],
                gpu16.loss[i], cpu.grad_norm[i], gpu32.grad_norm[i], gpu16.grad_norm[i]);
  }
  for (int64_t s = 0; s < kSteps; ++s) {
    const size_t i = static_cast<size_t>(s);
    INFO("step " << s + 1 << ": cpu " << cpu.loss[i] << ", gpu fp32 " << gpu32.loss[i] << ", gpu bf16 "
                 << gpu16.loss[i]);
    CHECK(relative(gpu32.loss[i], cpu.loss[i]) < (s < 5 ? 1e-4 : 2e-2));
    CHECK(relative(gpu16.loss[i], cpu.loss[i]) < (s < 5 ? 2e-3 : 0.15));
  }
  for (size_t w = 0; w < static_cast<size_t>(kSteps); w += 10) {
    INFO("steps " << w + 1 << "-" << w + 10);
    CHECK(relative(mean(gpu32.loss, w, w + 10), mean(cpu.loss, w, w + 10)) < 5e-3);
    CHECK(relative(mean(gpu16.loss, w, w + 10), mean(cpu.loss, w, w + 10)) < 2e-2);
  }
  CHECK(relative(mean(gpu16.loss, 40, 50), mean(cpu.loss, 40, 50)) < 1e-2);
  CHECK(cpu.loss.back() < cpu.loss.front() - 1.0);  // the comparison is of a run that learns
}

TEST_CASE("a micro-batch replayed as a CUDA graph computes what the eager pass does, bit for bit", "[gpu][train][graph]") {
  REQUIRE(moe::cuda_device_count() > 0);
  const Corpus corpus("train_gpu_graph");
  const moe::JobConfig cfg = debug_moe(corpus.path, "cuda", "bf16");
  const auto& t = cfg.train;
  auto losses = [&](bool graph) {
    moe::select_cuda_device(0);
    moe::TensorPool pool(moe::Device::kCuda);
    moe::ParamStore params(cfg.model, pool, moe::Layout{}, moe::MeshCoord{}, moe::DType::kBF16);
    params.init(cfg.model, 7);
    moe::Transformer model(cfg.model, t.batch_size, t.seq_len, t.ce_chunk_size, pool, params);
    if (graph) model.replay_micro_batches_as_graph();
    moe::Optimizer opt(cfg.optimizer, params, pool);
    const auto world = moe::single_process_world();
    std::vector<int32_t> in(static_cast<size_t>(model.tokens_per_micro_batch())), tg(in.size());
    std::vector<double> out;
    for (int64_t step = 1; step <= 6; ++step) {  // eager, capture, then replays
      params.zero_grads();
      corpus.sampler.fill(step - 1, 0, 1, 0, 1, in.data(), tg.data());
      moe::upload(model.inputs(), in.data());
      moe::upload(model.targets(), tg.data());
      out.push_back(model.forward_backward(1.0f));
      out.push_back(opt.grad_norm(*world));
      opt.step(1e-3, 1.0, step);
    }
    return out;
  };
  const std::vector<double> eager = losses(false), graph = losses(true);
  CHECK(graph == eager);
}

TEST_CASE("a warm GPU step allocates no device memory", "[gpu][train][memory]") {
  REQUIRE(moe::cuda_device_count() > 0);
  const Corpus corpus("train_gpu_memory");
  const moe::BatchSampler& sampler = corpus.sampler;
  const moe::JobConfig cfg = debug_moe(corpus.path, "cuda", "bf16");
  moe::Mesh mesh(moe::Layout{}, moe::single_process_world());
  moe::StepRunner runner(cfg, mesh);
  runner.step(1, sampler);  // first calls size the kernels' scratch buffers
  runner.step(2, sampler);
  const moe::DeviceMemoryStats warm = moe::device_memory_stats();
  for (int64_t s = 3; s <= 6; ++s) runner.step(s, sampler);
  const moe::DeviceMemoryStats after = moe::device_memory_stats();
  CHECK(after.cuda_mallocs == warm.cuda_mallocs);
  CHECK(after.peak_in_use == warm.peak_in_use);
  std::printf("debug_moe bf16 on the GPU: peak %.1f MiB in use, %.1f MiB reserved, %ld cudaMalloc calls\n",
              static_cast<double>(after.peak_in_use) / (1 << 20), static_cast<double>(after.reserved) / (1 << 20),
              static_cast<long>(after.cuda_mallocs));
}

TEST_CASE("a checkpoint saved on the GPU resumes bit for bit", "[gpu][train][checkpoint]") {
  REQUIRE(moe::cuda_device_count() > 0);
  const Corpus corpus("train_gpu_resume");
  const moe::BatchSampler& sampler = corpus.sampler;
  moe::JobConfig cfg = debug_moe(corpus.path, "cuda", "bf16");
  cfg.checkpoint.dir = moe::test::fresh_dir("train_gpu_resume_ckpt");

  std::vector<double> straight, resumed;
  {
    moe::Mesh mesh(moe::Layout{}, moe::single_process_world());
    moe::StepRunner runner(cfg, mesh);
    for (int64_t s = 1; s <= 8; ++s) {
      const double loss = runner.step(s, sampler).loss;
      if (s > 5) straight.push_back(loss);
      if (s == 5) moe::save_checkpoint(cfg, {5, 0}, runner.state_tensors(), mesh.world());
    }
  }
  {
    moe::Mesh mesh(moe::Layout{}, moe::single_process_world());
    moe::StepRunner runner(cfg, mesh);
    CHECK(runner.load_checkpoint(cfg.checkpoint.dir).step == 5);
    for (int64_t s = 6; s <= 8; ++s) resumed.push_back(runner.step(s, sampler).loss);
  }
  CHECK(resumed == straight);
}
