#include "src/train/divergence.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace moe {

DivergenceWatch::DivergenceWatch(double spike_factor, int64_t max_unhealthy_in_a_row, LossHistory history)
    : spike_factor_(spike_factor), max_unhealthy_(max_unhealthy_in_a_row), history_(history) {}

std::string DivergenceWatch::judge(int64_t step, double loss, double grad_norm) {
  std::string why;
  if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
    why = fmt::format("step {}: non-finite loss {:.6g} or gradient norm {:.6g}", step, loss, grad_norm);
  } else if (spike_factor_ > 0 && history_.count >= kLossesBeforeSpikes && loss > spike_factor_ * history_.mean) {
    why = fmt::format("step {}: loss spike {:.4f}, {:.1f}x the running mean {:.4f} (train.spike_factor = {})", step,
                      loss, loss / history_.mean, history_.mean, spike_factor_);
  }
  if (!why.empty()) {
    unhealthy_in_a_row_ += 1;
    return why;
  }
  unhealthy_in_a_row_ = 0;
  history_.count += 1;
  history_.mean += (loss - history_.mean) / static_cast<double>(std::min<int64_t>(history_.count, 100));
  return "";
}

}  // namespace moe
