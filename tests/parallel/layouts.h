// A parallel layout for the tests, axis by axis (cp = pp = 1).
#pragma once

#include <cstdint>

#include "src/config/derived.h"

namespace moe::test {

inline Layout layout_of(int64_t dp_replicate, int64_t dp_shard, int64_t ep, int64_t tp) {
  Layout l;
  l.dp_replicate = dp_replicate;
  l.dp_shard = dp_shard;
  l.ep = ep;
  l.tp = tp;
  return l;
}

}  // namespace moe::test
