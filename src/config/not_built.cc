// What is not built yet, each said in the one-line form so that a config
// never silently runs something other than what it asked for.
#include <fmt/format.h>

#include "src/config/validate.h"
#include "src/core/user_error.h"

namespace moe {
namespace {

template <typename T>
[[noreturn]] void not_built(const std::string& key, const T& value, const std::string& what, const std::string& fix) {
  throw UserError(fmt::format("{} = {}: {} is not built yet; {}", key, value, what, fix));
}

}  // namespace

void require_built_features(const JobConfig& c, const Layout& l) {
  if (l.cp > 1) not_built("distributed.cp", l.cp, "context parallelism", "set distributed.cp = 1");
  if (c.model.norm_type != NormType::kRmsNorm) {
    not_built("model.norm_type", quoted(c.model.norm_type), "LayerNorm", "use \"rmsnorm\"");
  }
  if (c.model.activation != Activation::kSilu) {
    not_built("model.activation", quoted(c.model.activation), "an FFN activation other than SwiGLU", "use \"silu\"");
  }
  if (c.model.qk_norm) not_built("model.qk_norm", "true", "QK-norm", "set model.qk_norm = false");
}

}  // namespace moe
