// BatchSampler: which tokens each (step, micro-batch, data-parallel rank) trains on.
//
// Window layout: the stream is cut into W = floor(num_tokens / (seq_len + 1))
// non-overlapping windows; window w is tokens [w*(seq_len+1), (w+1)*(seq_len+1))
// (the tail that fills no window is never read). A window gives one sample:
// inputs = window[0, seq_len), targets = window[1, seq_len] (next tokens).
//
// Order: global sample g = ((step * grad_accum + micro) * dp_size + dp_rank) * batch_size + b
// reads window permutation(seed, epoch)[position], epoch = g / W, position = g % W
// (window_permutation.h). So a batch is a pure function of its arguments (a run
// resumes at any step with the same data), each epoch visits every window
// once, and the ranks of one step never share a window within an epoch.
#pragma once

#include <cstdint>
#include <vector>

#include "src/data/token_dataset.h"

namespace moe {

class BatchSampler {
 public:
  // The dataset must outlive the sampler. Fewer tokens than one window is a UserError.
  BatchSampler(const TokenDataset& dataset, int64_t seq_len, int64_t batch_size, int64_t seed);

  // Fills inputs_BT and targets_BT, each batch_size x seq_len, row-major.
  // Not thread-safe: it caches the current epoch's permutation.
  void fill(int64_t step, int64_t micro, int64_t grad_accum, int64_t dp_rank, int64_t dp_size, int32_t* inputs_BT,
            int32_t* targets_BT) const;

  int64_t num_windows() const { return num_windows_; }

  // The window read by global sample g (see the header comment).
  int64_t window_of_sample(int64_t g) const;

 private:
  const TokenDataset& dataset_;
  int64_t seq_len_;
  int64_t batch_size_;
  int64_t seed_;
  int64_t num_windows_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_permutation_;  // 8 bytes per window
};

}  // namespace moe
