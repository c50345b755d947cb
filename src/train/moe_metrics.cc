#include "src/train/moe_metrics.h"

#include <algorithm>
#include <climits>

namespace moe {
namespace {

// min / max over the counts (1 = perfectly even, 0 = an expert got nothing).
struct Balance {
  int64_t lo = INT64_MAX, hi = 0;
  void add(const std::vector<int64_t>& counts) {
    for (int64_t c : counts) {
      lo = std::min(lo, c);
      hi = std::max(hi, c);
    }
  }
  double value() const { return hi > 0 ? static_cast<double>(lo) / static_cast<double>(hi) : 0.0; }
};

double fraction(int64_t part, int64_t whole) {
  return whole > 0 ? static_cast<double>(part) / static_cast<double>(whole) : 0.0;
}

}  // namespace

std::vector<MoEStepStats> sum_over_ranks(Communicator& dp, std::vector<MoEStepStats> stats) {
  if (dp.size() == 1 || stats.empty()) return stats;
  std::vector<int32_t> counts;
  std::vector<float> sums;
  for (const MoEStepStats& s : stats) {
    for (int64_t c : s.routed_per_expert) counts.push_back(static_cast<int32_t>(c));
    for (int64_t c : s.kept_per_expert) counts.push_back(static_cast<int32_t>(c));
    counts.push_back(static_cast<int32_t>(s.pairs));
    counts.push_back(static_cast<int32_t>(s.dropped));
    counts.push_back(static_cast<int32_t>(s.micro_batches));
    sums.push_back(static_cast<float>(s.load_balance));
    sums.push_back(static_cast<float>(s.z_loss));
    sums.push_back(static_cast<float>(s.sequence_balance));
  }
  dp.all_reduce(view_of(counts.data(), {static_cast<int64_t>(counts.size())}, DType::kI32), ReduceOp::kSum);
  dp.all_reduce(view_of(sums.data(), {static_cast<int64_t>(sums.size())}), ReduceOp::kSum);
  size_t ci = 0, si = 0;
  for (MoEStepStats& s : stats) {
    for (int64_t& v : s.routed_per_expert) v = counts[ci++];
    for (int64_t& v : s.kept_per_expert) v = counts[ci++];
    s.pairs = counts[ci++];
    s.dropped = counts[ci++];
    s.micro_batches = counts[ci++];
    s.load_balance = sums[si++];
    s.z_loss = sums[si++];
    s.sequence_balance = sums[si++];
  }
  return stats;
}

void add_moe_metrics(StepMetrics& m, const std::vector<MoEStepStats>& stats, const std::vector<int64_t>& block_index) {
  if (stats.empty()) return;
  m.has_moe = true;
  Balance all;
  int64_t pairs = 0, dropped = 0;
  for (size_t i = 0; i < stats.size(); ++i) {
    const MoEStepStats& s = stats[i];
    const double micro = static_cast<double>(std::max<int64_t>(1, s.micro_batches));
    Balance layer;
    layer.add(s.routed_per_expert);
    m.moe_layers.push_back({block_index.at(i), s.load_balance / micro, s.z_loss / micro, layer.value(),
                            fraction(s.dropped, s.pairs), s.routed_per_expert});
    m.aux_loss += s.load_balance / micro;
    m.router_z_loss += s.z_loss / micro;
    m.expert_counts.push_back(s.routed_per_expert);
    all.add(s.routed_per_expert);
    pairs += s.pairs;
    dropped += s.dropped;
  }
  m.expert_balance = all.value();
  m.dropped_frac = fraction(dropped, pairs);
}

}  // namespace moe
