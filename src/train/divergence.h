// Divergence: which steps are healthy, and when a run has diverged.
//
// A step is unhealthy when its update was skipped (a non-finite loss or
// gradient norm) or its loss spikes: above train.spike_factor times the
// running mean of the healthy losses before it (judged once 10 healthy losses
// are known; spike_factor = 0 judges non-finite steps only). Spikes never enter
// the mean, so a run that has blown up keeps being judged against its losses
// from before, and more than train.max_skipped unhealthy steps in a row mean
// it has diverged.
//
// The update that blows up usually has a finite loss itself: it is the next
// step's loss that shows it. So a checkpoint is judged by the step after it
// (checkpoint.h: provisional, then healthy or unhealthy).
#pragma once

#include <cstdint>
#include <string>

#include "src/checkpoint/loss_history.h"

namespace moe {


class DivergenceWatch {
 public:
  DivergenceWatch(double spike_factor, int64_t max_unhealthy_in_a_row, LossHistory history);

  // Judges step `step` by its global loss and gradient norm: "" when healthy
  // (its loss then enters the mean), else why not, in words. A non-finite
  // loss or norm is unhealthy (its update was skipped).
  std::string judge(int64_t step, double loss, double grad_norm);

  // More than max_unhealthy_in_a_row unhealthy steps in a row.
  bool diverged() const { return unhealthy_in_a_row_ > max_unhealthy_; }
  int64_t unhealthy_in_a_row() const { return unhealthy_in_a_row_; }
  const LossHistory& history() const { return history_; }

  static constexpr int64_t kLossesBeforeSpikes = 10;

 private:
  double spike_factor_;
  int64_t max_unhealthy_;
  LossHistory history_;
  int64_t unhealthy_in_a_row_ = 0;
};

}  // namespace moe
