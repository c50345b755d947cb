#include "src/train/evaluate.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "src/core/build_info.h"
#include "src/core/user_error.h"
#include "src/data/batch_sampler.h"
#include "src/data/token_dataset.h"
#include "src/parallel/mesh.h"
#include "src/checkpoint/checkpoint.h"
#include "src/train/step_runner.h"
#include "src/train/trainer.h"
#include "src/train/world.h"

namespace moe {

EvalResult evaluate_checkpoint(const JobConfig& cfg, const Layout& layout, const std::string& checkpoint) {
  spdlog::info("moe_train {}", version_line());
  EvalResult result;
  Mesh mesh(layout, make_world(layout, placement_of(cfg.train)), static_cast<double>(cfg.distributed.nccl_timeout_sec));
  std::string pattern = cfg.eval.file_pattern;
  result.data = cfg.eval.dataset_path;
  if (result.data.empty()) {
    if (!cfg.data.dataset_path.empty()) {
      throw UserError(
          fmt::format("eval: eval.dataset_path is empty: set it to the validation data of {} (e.g. "
                      "--eval.dataset_path=DIR/val after `moe_train prepare --output=DIR`)",
                      cfg.data.dataset_path));
    }
    result.data = built_in_corpus(mesh.world()) + "/val";
    pattern = "*.npy";
  }
  result.checkpoint = checkpoint_to_read(cfg.checkpoint, checkpoint, "eval", "evaluate");
  const TokenDataset data = TokenDataset::open(result.data, pattern, cfg.model.vocab_size, "eval");
  spdlog::info("eval data: {}", data.describe());
  const BatchSampler sampler(data, cfg.train.seq_len, cfg.train.batch_size, cfg.train.seed);
  StepRunner runner(cfg, mesh);
  result.step = runner.load_checkpoint(result.checkpoint).step;
  spdlog::info("evaluating {} (step {}) on {} batches", result.checkpoint, result.step, cfg.eval.steps);
  result.loss = runner.evaluate(sampler, cfg.eval.steps);
  result.batches = cfg.eval.steps;
  result.tokens = cfg.eval.steps * cfg.train.batch_size * cfg.train.seq_len * mesh.data_parallel().size();
  return result;
}

}  // namespace moe
