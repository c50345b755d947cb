#include "src/data/batch_sampler.h"

#include <fmt/format.h>

#include <cstring>
#include <stdexcept>

#include "src/core/user_error.h"
#include "src/data/window_permutation.h"

namespace moe {

BatchSampler::BatchSampler(const TokenDataset& dataset, int64_t seq_len, int64_t batch_size, int64_t seed)
    : dataset_(dataset), seq_len_(seq_len), batch_size_(batch_size), seed_(seed) {
  if (seq_len < 1 || batch_size < 1) throw std::invalid_argument("BatchSampler: seq_len and batch_size must be >= 1");
  num_windows_ = dataset.num_tokens() / (seq_len + 1);
  if (num_windows_ < 1) {
    throw UserError(
        fmt::format("dataset {} has {} tokens, fewer than one sample of train.seq_len + 1 = {} tokens; "
                    "use a larger dataset or a smaller train.seq_len",
                    dataset.path(), dataset.num_tokens(), seq_len + 1));
  }
}

int64_t BatchSampler::window_of_sample(int64_t g) const {
  if (g < 0) throw std::invalid_argument("BatchSampler: negative sample index");
  const int64_t epoch = g / num_windows_;
  if (epoch != cached_epoch_) {
    cached_permutation_ = window_permutation(num_windows_, seed_, epoch);
    cached_epoch_ = epoch;
  }
  return cached_permutation_[g % num_windows_];
}

void BatchSampler::fill(int64_t step, int64_t micro, int64_t grad_accum, int64_t dp_rank, int64_t dp_size,
                        int32_t* inputs_BT, int32_t* targets_BT) const {
  if (step < 0 || grad_accum < 1 || micro < 0 || micro >= grad_accum || dp_size < 1 || dp_rank < 0 ||
      dp_rank >= dp_size) {
    throw std::invalid_argument(fmt::format("BatchSampler::fill: bad indices step={} micro={}/{} dp_rank={}/{}", step,
                                            micro, grad_accum, dp_rank, dp_size));
  }
  const int64_t T = seq_len_;
  const int64_t first_sample = ((step * grad_accum + micro) * dp_size + dp_rank) * batch_size_;
  for (int64_t b = 0; b < batch_size_; ++b) {
    const int64_t start = window_of_sample(first_sample + b) * (T + 1);
    int32_t* inputs = inputs_BT + b * T;
    int32_t* targets = targets_BT + b * T;
    dataset_.read(start, T, inputs);
    std::memcpy(targets, inputs + 1, static_cast<size_t>(T - 1) * sizeof(int32_t));
    dataset_.read(start + T, 1, targets + T - 1);
  }
}

}  // namespace moe
