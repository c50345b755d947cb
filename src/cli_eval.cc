#include <fmt/format.h>

#include <cmath>

#include "src/cli_options.h"
#include "src/commands.h"
#include "src/config/derived.h"
#include "src/config/validate.h"
#include "src/core/user_error.h"
#include "src/parallel/launch_env.h"
#include "src/train/evaluate.h"
#include "src/train/trainer.h"

namespace moe {

int run_eval(const std::vector<std::string>& args, std::ostream& out) {
  const char* usage =
      "usage: moe_train eval CONFIG.toml [--checkpoint=STEP_OR_CHECKPOINT_FOLDER] [--section.key=value ...]";
  std::string checkpoint;
  ConfigArguments given;
  for (const std::string& a : args) {
    if (a.rfind("--checkpoint=", 0) == 0 && a.size() > 13) {
      checkpoint = a.substr(13);
    } else {
      given.take(a, "eval", usage);
    }
  }
  if (given.config_path.empty()) throw UserError(fmt::format("eval: no config file given; {}", usage));
  JobConfig cfg = load_checked_config(given.config_path, given.overrides);
  const LaunchEnv env = read_launch_env();
  const Layout layout = resolve_layout(cfg.distributed, env.world_size);
  require_built_features(cfg, layout);
  resolve_device(cfg.train);
  const EvalResult r = evaluate_checkpoint(cfg, layout, checkpoint);
  if (env.rank == 0) {
    out << fmt::format(
        "eval: loss {:.6f}, perplexity {:.4f} over {} batches ({} tokens) of {}; checkpoint {} (step {})\n", r.loss,
        std::exp(r.loss), r.batches, r.tokens, r.data, r.checkpoint, r.step);
  }
  return 0;
}

}  // namespace moe
