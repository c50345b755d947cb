// The device counters behind every MoE layer's step statistics: the pairs
// routed to and kept by each expert, and the aux losses summed over the
// step's micro-batches. They live in one buffer, so a step zeroes them with
// one memset and reads them with one download: one host sync for all layers,
// not three per layer.
// Layout, per MoE layer in build order: routed I32 [E], kept I32 [E], aux
// F32 [3] (load balance, z-loss, sequence balance), 2E + 3 words.
#pragma once

#include <cstdint>
#include <vector>

#include "src/core/tensor_pool.h"

namespace moe {

class MoEStepCounters {
 public:
  // Room for `layers` MoE layers of E experts each, in `pool`'s memory.
  MoEStepCounters(TensorPool& pool, int64_t layers, int64_t E);

  // One layer's counters: views of the buffer.
  struct Counters {
    int64_t index = 0;  // for the reads below
    Tensor routed_E, kept_E, aux_3;
  };
  // The next layer's counters, in the order the layers are built.
  Counters claim();

  void zero();      // every layer's
  void download();  // every layer's, to the host: one HOST SYNC for device memory

  // Layer `index`'s values as of the last download().
  std::vector<int64_t> routed(int64_t index) const;
  std::vector<int64_t> kept(int64_t index) const;
  float aux(int64_t index, int which) const;  // which: 0 load balance, 1 z-loss, 2 sequence balance

 private:
  int64_t layers_, E_, claimed_ = 0;
  Tensor buffer_;              // I32 [layers * (2E + 3)]
  std::vector<int32_t> host_;  // buffer_ as of the last download()
  int64_t word(int64_t index, int64_t offset) const { return index * (2 * E_ + 3) + offset; }
};

}  // namespace moe
