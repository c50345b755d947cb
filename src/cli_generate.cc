#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstdlib>

#include "src/cli_options.h"
#include "src/commands.h"
#include "src/config/derived.h"
#include "src/core/user_error.h"
#include "src/train/generate.h"
#include "src/train/trainer.h"

namespace moe {
namespace {

const char* kGenerateUsage =
    "usage: moe_train generate CONFIG.toml --prompt=TEXT [--max-new-tokens=200] [--temperature=1.0] [--top-k=0] "
    "[--top-p=1.0] [--seed=0] [--checkpoint=PATH] [--section.key=value ...]";

double number(const std::string& option, const std::string& text, double lo, double hi, const char* range) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(v >= lo && v <= hi)) {
    throw UserError(fmt::format("generate: {}={}: must be a number {}", option, text, range));
  }
  return v;
}

int64_t whole(const std::string& option, const std::string& text, int64_t lo) {
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || v < lo) {
    throw UserError(fmt::format("generate: {}={}: must be a whole number >= {}", option, text, lo));
  }
  return v;
}

}  // namespace

int run_generate(const std::vector<std::string>& args, std::ostream& out) {
  ConfigArguments given;
  GenerateOptions o;
  bool has_prompt = false;
  for (const std::string& a : args) {
    const size_t eq = a.find('=');
    const std::string key = a.substr(0, eq), value = eq == std::string::npos ? "" : a.substr(eq + 1);
    if (key == "--prompt" && eq != std::string::npos) {
      o.prompt = value;
      has_prompt = true;
    } else if (key == "--max-new-tokens") {
      o.max_new_tokens = whole(key, value, 1);
    } else if (key == "--temperature") {
      o.sampling.temperature = number(key, value, 0, 100, "in [0, 100] (0: the most likely token each time)");
    } else if (key == "--top-k") {
      o.sampling.top_k = whole(key, value, 0);
    } else if (key == "--top-p") {
      o.sampling.top_p = number(key, value, 1e-9, 1, "in (0, 1]");
    } else if (key == "--seed") {
      o.sampling.seed = static_cast<uint64_t>(whole(key, value, 0));
    } else if (key == "--checkpoint" && !value.empty()) {
      o.checkpoint = value;
    } else {
      given.take(a, "generate", kGenerateUsage);
    }
  }
  if (given.config_path.empty() || !has_prompt) {
    throw UserError(fmt::format("generate: needs a config file and --prompt; {}", kGenerateUsage));
  }
  JobConfig cfg = load_checked_config(given.config_path, given.overrides);
  resolve_device(cfg.train);
  out << o.prompt << std::flush;
  const GenerateResult r = generate_text(cfg, o, [&out](const std::string& text) { out << text << std::flush; });
  out << "\n";
  spdlog::info("{} new tokens in {:.2f} s ({:.1f} tokens/s, the prompt included){}", r.tokens.size(), r.seconds,
               static_cast<double>(o.prompt.size() + 1 + r.tokens.size()) / std::max(r.seconds, 1e-9),
               r.ended ? "; the model ended the document" : "");
  return 0;
}

}  // namespace moe
