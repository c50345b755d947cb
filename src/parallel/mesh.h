// The device mesh: where each rank sits in the layout and the groups it
// communicates in. Ranks are laid out with tp innermost (a TP group shares a
// node), then ep, dp_shard, dp_replicate, and pipeline stages outermost (a
// stage's ranks are consecutive; stages talk only to their neighbours):
//   rank = (((pp_i * dp_replicate + dp_replicate_i) * dp_shard + dp_shard_i) * ep + ep_i) * tp + tp_i
// Groups: tp, ep, dp_shard (FSDP shards), dp_replicate (HSDP replicas), pp
// (the stages of one pipeline: the ranks that differ only in pp_i), and
// data_parallel = dp_replicate x dp_shard x ep (the ranks that read different
// data and average the gradients of non-expert parameters), and
// non_expert_replicas = dp_replicate x ep (the ranks that hold the same FSDP
// shard of a non-expert parameter; an expert shard's replicas are dp_replicate).
#pragma once

#include <cstdint>
#include <memory>

#include "src/config/derived.h"
#include "src/parallel/communicator.h"
#include "src/parallel/traffic_count.h"

namespace moe {

struct MeshCoord {
  int64_t dp_replicate = 0, dp_shard = 0, ep = 0, tp = 0, pp = 0;
};

// Pure layout arithmetic (no communication).
MeshCoord mesh_coord(const Layout& layout, int64_t rank);
int64_t mesh_rank(const Layout& layout, const MeshCoord& c);
// This rank's index within the data-parallel group (which slice of the global batch it reads).
int64_t data_parallel_index(const Layout& layout, const MeshCoord& c);

// What each group moved since the mesh was built (or reset_traffic()).
struct MeshTraffic {
  GroupTraffic world, tp, ep, dp_shard, dp_replicate, pp, data_parallel, non_expert_replicas;
};

class Mesh {
 public:
  // Splits `world` into every group once (collective: all ranks must call it).
  // world->size() must equal layout.world(). With collective_timeout_s > 0,
  // every group's collectives are timed (collective_timeout.h) and named in
  // the message when one hangs.
  Mesh(const Layout& layout, std::unique_ptr<Communicator> world, double collective_timeout_s = 0);
  // A mesh that only plans (--dry-run): `rank`'s place in the layout and
  // every group's size, without any other rank. A collective on it is a bug
  // (std::logic_error naming the group).
  static Mesh for_planning(const Layout& layout, int64_t rank = 0);

  const Layout& layout() const { return layout_; }
  const MeshCoord& coord() const { return coord_; }
  Communicator& world() { return *world_; }
  Communicator& tp() { return *tp_; }
  Communicator& ep() { return *ep_; }
  Communicator& dp_shard() { return *dp_shard_; }
  Communicator& dp_replicate() { return *dp_replicate_; }
  Communicator& pp() { return *pp_; }
  Communicator& data_parallel() { return *data_parallel_; }
  Communicator& non_expert_replicas() { return *non_expert_replicas_; }
  const MeshTraffic& traffic() const { return *traffic_; }
  void reset_traffic() { *traffic_ = MeshTraffic{}; }

 private:
  explicit Mesh(const Layout& layout) : layout_(layout) {}

  Layout layout_;
  MeshCoord coord_;
  std::unique_ptr<MeshTraffic> traffic_ = std::make_unique<MeshTraffic>();  // stays put if the mesh moves
  std::unique_ptr<Communicator> world_, tp_, ep_, dp_shard_, dp_replicate_, pp_, data_parallel_, non_expert_replicas_;
};

}  // namespace moe
