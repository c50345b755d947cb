#include "src/parallel/mesh.h"

#include "src/parallel/collective_timeout.h"

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace moe {
namespace {

// A group of a planning mesh: its size and this rank's place, nothing more.
class PlanningCommunicator final : public Communicator {
 public:
  PlanningCommunicator(std::string group, int64_t rank, int64_t size)
      : group_(std::move(group)), rank_(static_cast<int>(rank)), size_(static_cast<int>(size)) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce(const Tensor&, ReduceOp) override { refuse("all_reduce"); }
  void all_gather(const Tensor&, const Tensor&) override { refuse("all_gather"); }
  void reduce_scatter(const Tensor&, const Tensor&, ReduceOp) override { refuse("reduce_scatter"); }
  void broadcast(const Tensor&, int) override { refuse("broadcast"); }
  void all_to_all_v(const Tensor&, const std::vector<int64_t>&, const Tensor&, const std::vector<int64_t>&) override {
    refuse("all_to_all_v");
  }
  void barrier() override { refuse("barrier"); }
  void send_recv(const Tensor&, int, const Tensor&, int) override { refuse("send_recv"); }
  std::unique_ptr<Communicator> split(int, int) override { refuse("split"); }

 private:
  [[noreturn]] void refuse(const char* what) const {
    throw std::logic_error(std::string(what) + " on the " + group_ + " group of a planning mesh, which only plans");
  }
  std::string group_;
  int rank_, size_;
};

}  // namespace

MeshCoord mesh_coord(const Layout& l, int64_t rank) {
  MeshCoord c;
  c.tp = rank % l.tp;
  rank /= l.tp;
  c.ep = rank % l.ep;
  rank /= l.ep;
  c.dp_shard = rank % l.dp_shard;
  rank /= l.dp_shard;
  c.dp_replicate = rank % l.dp_replicate;
  c.pp = rank / l.dp_replicate;
  return c;
}

int64_t mesh_rank(const Layout& l, const MeshCoord& c) {
  return (((c.pp * l.dp_replicate + c.dp_replicate) * l.dp_shard + c.dp_shard) * l.ep + c.ep) * l.tp + c.tp;
}

int64_t data_parallel_index(const Layout& l, const MeshCoord& c) {
  return (c.dp_replicate * l.dp_shard + c.dp_shard) * l.ep + c.ep;
}

Mesh::Mesh(const Layout& layout, std::unique_ptr<Communicator> world, double collective_timeout_s)
    : layout_(layout), world_(std::move(world)) {
  if (world_->size() != layout.world()) {
    throw std::logic_error("Mesh: " + std::to_string(world_->size()) + " ranks for a layout of " +
                           std::to_string(layout.world()) + " (the start-up check should have refused this)");
  }
  coord_ = mesh_coord(layout, world_->rank());
  const MeshCoord& c = coord_;
  const auto color = [&](MeshCoord varying_zeroed) { return static_cast<int>(mesh_rank(layout, varying_zeroed)); };
  const int key = world_->rank();
  // A group's color is the rank of its member whose varying coordinates are 0.
  tp_ = world_->split(color({c.dp_replicate, c.dp_shard, c.ep, 0, c.pp}), key);
  ep_ = world_->split(color({c.dp_replicate, c.dp_shard, 0, c.tp, c.pp}), key);
  dp_shard_ = world_->split(color({c.dp_replicate, 0, c.ep, c.tp, c.pp}), key);
  dp_replicate_ = world_->split(color({0, c.dp_shard, c.ep, c.tp, c.pp}), key);
  pp_ = world_->split(color({c.dp_replicate, c.dp_shard, c.ep, c.tp, 0}), key);
  data_parallel_ = world_->split(color({0, 0, 0, c.tp, c.pp}), key);
  non_expert_replicas_ = world_->split(color({0, c.dp_shard, 0, c.tp, c.pp}), key);
  struct Group {
    std::unique_ptr<Communicator>* comm;
    const char* name;
    GroupTraffic* traffic;
  };
  MeshTraffic& t = *traffic_;
  const Group groups[] = {{&world_, "world", &t.world},
                          {&tp_, "tp", &t.tp},
                          {&ep_, "ep", &t.ep},
                          {&dp_shard_, "dp_shard", &t.dp_shard},
                          {&dp_replicate_, "dp_replicate", &t.dp_replicate},
                          {&pp_, "pp", &t.pp},
                          {&data_parallel_, "data_parallel", &t.data_parallel},
                          {&non_expert_replicas_, "non_expert_replicas", &t.non_expert_replicas}};
  for (const Group& g : groups) {
    if (collective_timeout_s > 0 && world_->size() > 1) {
      *g.comm = with_collective_timeout(std::move(*g.comm), collective_timeout_s, g.name);
    }
    *g.comm = with_traffic_count(std::move(*g.comm), g.traffic);
  }
}

Mesh Mesh::for_planning(const Layout& l, int64_t rank) {
  Mesh m(l);
  m.coord_ = mesh_coord(l, rank);
  const MeshCoord& c = m.coord_;
  const auto group = [](const char* name, int64_t r, int64_t size) {
    return std::make_unique<PlanningCommunicator>(name, r, size);
  };
  m.world_ = group("world", rank, l.world());
  m.tp_ = group("tp", c.tp, l.tp);
  m.ep_ = group("ep", c.ep, l.ep);
  m.dp_shard_ = group("dp_shard", c.dp_shard, l.dp_shard);
  m.dp_replicate_ = group("dp_replicate", c.dp_replicate, l.dp_replicate);
  m.pp_ = group("pp", c.pp, l.pp);
  m.data_parallel_ = group("data_parallel", data_parallel_index(l, c), l.dp_replicate * l.dp_shard * l.ep);
  m.non_expert_replicas_ = group("non_expert_replicas", c.dp_replicate * l.ep + c.ep, l.dp_replicate * l.ep);
  return m;
}

}  // namespace moe
