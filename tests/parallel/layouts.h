// A parallel layout for the tests, axis by axis (cp = 1; pp = 1 unless set),
// and the config keys that ask for it.
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

// distributed.{dp_replicate, dp_shard, ep, tp} = the layout's (before validate_config).
inline void set_layout(DistributedConfig& d, const Layout& l) {
  d.dp_replicate = l.dp_replicate;
  d.dp_shard = l.dp_shard;
  d.ep = l.ep;
  d.tp = l.tp;
  d.pp = l.pp;
}

}  // namespace moe::test
