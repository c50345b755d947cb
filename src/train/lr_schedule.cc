#include "src/train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace moe {
namespace {

double cosine(double min, double p) { return min + 0.5 * (1.0 - min) * (1.0 + std::cos(M_PI * p)); }

double progress(int64_t done, int64_t total) {
  if (total <= 0) return 1.0;
  return std::clamp(static_cast<double>(done) / static_cast<double>(total), 0.0, 1.0);
}

}  // namespace

double lr_factor(const SchedulerConfig& s, int64_t max_steps, int64_t step) {
  if (s.warmup_steps > 0 && step <= s.warmup_steps) {
    return static_cast<double>(step) / static_cast<double>(s.warmup_steps);
  }
  const int64_t after = std::max<int64_t>(0, max_steps - s.warmup_steps);
  const int64_t t = step - s.warmup_steps;  // steps since warm-up ended
  const double min = s.min_lr_ratio;
  switch (s.name) {
    case LrSchedule::kConstant: return 1.0;
    case LrSchedule::kWsd: {
      const int64_t decay =
          s.decay_steps.value_or(static_cast<int64_t>(std::llround(0.1 * static_cast<double>(after))));
      const int64_t stable = s.stable_steps.value_or(std::max<int64_t>(0, after - decay));
      if (t <= stable) return 1.0;
      return cosine(min, progress(t - stable, decay));
    }
    case LrSchedule::kLinear: return 1.0 - (1.0 - min) * progress(t, s.decay_steps.value_or(after));
    case LrSchedule::kCosine: return cosine(min, progress(t, s.decay_steps.value_or(after)));
  }
  throw std::logic_error("lr_factor: unknown scheduler.name");
}

double bias_update_rate(const ModelConfig& m, int64_t max_steps, int64_t step) {
  const double rate = m.moe_bias_update_rate;
  const double frac = static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, max_steps));
  switch (m.moe_bias_schedule) {
    case BiasSchedule::kConstant: return rate;
    case BiasSchedule::kCosineDecay: return rate * 0.5 * (1.0 + std::cos(M_PI * frac));
    case BiasSchedule::kLinearWarmup: return rate * std::min(1.0, 10.0 * frac);
  }
  throw std::logic_error("bias_update_rate: unknown model.moe_bias_schedule");
}

}  // namespace moe
