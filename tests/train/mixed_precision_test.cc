// bf16 mixed precision (activations and weight copies in bf16, fp32 masters,
// gradients and AdamW states), the GPU's default, run on the CPU through
// ops.h's bf16 host path: it follows the fp32 run within bf16 tolerance, the
// compute copies track the masters through AdamW, and a checkpoint resumes it
// bit for bit (the copies are refreshed from the loaded masters).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "src/config/derived.h"
#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/data/batch_sampler.h"
#include "src/data/token_dataset.h"
#include "src/kernels/ops.h"
#include "src/parallel/mesh.h"
#include "src/checkpoint/checkpoint.h"
#include "src/train/step_runner.h"
#include "tests/data/test_files.h"

namespace {

const moe::Placement kCpuBf16{moe::Device::kCpu, moe::DType::kBF16};
const moe::Placement kCpuF32{moe::Device::kCpu, moe::DType::kF32};

std::string dataset(const std::string& dir) {
  std::vector<uint16_t> tokens(16384);
  uint64_t x = 777;
  for (size_t i = 0; i < tokens.size(); ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    tokens[i] = static_cast<uint16_t>((x >> 40) % 5 == 0 ? (x >> 33) % 96 : (i * 7 + i / 3) % 96);
  }
  moe::test::write_token_npy(dir + "/tokens.npy", tokens);
  return dir;
}

moe::JobConfig config(const std::string& data) {
  moe::JobConfig cfg =
      moe::load_config_text(
          "", "tiny",
          {"model.dim=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.vocab_size=96",
           "model.num_experts=4", "model.moe_top_k=2", "model.moe_frequency=2", "model.moe_shared_experts=1",
           "train.seq_len=32", "train.batch_size=4", "train.max_steps=30", "optimizer.lr=0.003",
           "scheduler.warmup_steps=3", "data.dataset_path=" + data})
          .cfg;
  moe::validate_config(cfg);
  moe::fill_derived_defaults(cfg);
  return cfg;
}

std::vector<double> losses(moe::StepRunner& runner, const moe::BatchSampler& sampler, int64_t from, int64_t to) {
  std::vector<double> out;
  for (int64_t s = from; s <= to; ++s) out.push_back(runner.step(s, sampler).loss);
  return out;
}

}  // namespace

TEST_CASE("bf16 training on the CPU follows fp32 within bf16 tolerance") {
  const std::string dir = moe::test::fresh_dir("mixed_precision");
  const moe::JobConfig cfg = config(dataset(dir));
  const moe::TokenDataset data = moe::TokenDataset::open(dir, "*.npy", cfg.model.vocab_size);
  const moe::BatchSampler sampler(data, cfg.train.seq_len, cfg.train.batch_size, cfg.train.seed);
  moe::Mesh mesh(moe::Layout{}, moe::single_process_world());

  moe::StepRunner f32(cfg, mesh, kCpuF32), bf16(cfg, mesh, kCpuBf16);
  CHECK(f32.params().compute_dtype() == moe::DType::kF32);
  CHECK(bf16.params().compute_dtype() == moe::DType::kBF16);
  for (const moe::Param& p : bf16.params().all()) {
    REQUIRE(p.shard.dtype == moe::DType::kF32);  // masters
    REQUIRE(p.value.dtype == moe::DType::kBF16);
    REQUIRE(p.grad.dtype == moe::DType::kF32);
  }
  const std::vector<double> want = losses(f32, sampler, 1, 30), got = losses(bf16, sampler, 1, 30);
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double rel = std::fabs(got[i] - want[i]) / want[i];
    worst = std::max(worst, rel);
    INFO("step " << i + 1 << ": bf16 " << got[i] << ", fp32 " << want[i]);
    CHECK(rel < 3e-2);
  }
  std::printf("bf16 vs fp32 on the CPU, 30 steps: worst relative loss difference %.2e, final %.4f vs %.4f\n", worst,
              got.back(), want.back());
  CHECK(want.back() < want.front() - 1.0);  // a run that learns
  CHECK(worst > 0);                         // the bf16 path really rounds

  // The compute copies are the masters rounded to bf16, after 30 AdamW steps.
  const moe::Param& p = bf16.params().all().back();
  std::vector<float> master(static_cast<size_t>(p.shard.numel())), copy(master.size());
  moe::TensorPool scratch;
  const moe::Tensor widened = scratch.alloc({p.shard.numel()});
  moe::ops::cast(widened, p.shard_compute.reshaped({p.shard_compute.numel()}));
  moe::download(copy.data(), widened);
  moe::download(master.data(), p.shard);
  int64_t off = 0;
  for (size_t i = 0; i < master.size(); ++i) off += std::fabs(copy[i] - master[i]) > std::fabs(master[i]) / 256;
  CHECK(off == 0);
}

TEST_CASE("a bf16 run resumes from its checkpoint bit for bit") {
  const std::string dir = moe::test::fresh_dir("mixed_precision_resume");
  moe::JobConfig cfg = config(dataset(dir));
  cfg.checkpoint.dir = dir + "/ckpt";
  const moe::TokenDataset data = moe::TokenDataset::open(dir, "*.npy", cfg.model.vocab_size);
  const moe::BatchSampler sampler(data, cfg.train.seq_len, cfg.train.batch_size, cfg.train.seed);
  moe::Mesh mesh(moe::Layout{}, moe::single_process_world());

  moe::StepRunner straight(cfg, mesh, kCpuBf16);
  losses(straight, sampler, 1, 4);
  moe::save_checkpoint(cfg, {4, 0}, straight.state_tensors(), mesh.world());
  const std::vector<double> want = losses(straight, sampler, 5, 8);

  moe::StepRunner resumed(cfg, mesh, kCpuBf16);
  CHECK(resumed.load_checkpoint(cfg.checkpoint.dir).step == 4);
  CHECK(losses(resumed, sampler, 5, 8) == want);
}
