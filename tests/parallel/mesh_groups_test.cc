// Mesh groups on 8 CPU ranks (dp_shard 2 x ep 2 x tp 2, and pp 2 x dp_shard 2
// x tp 2, under mpirun): each group holds exactly the ranks that share the
// other coordinates.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "src/core/tensor_pool.h"
#include "src/parallel/mesh.h"

namespace {

std::unique_ptr<moe::Mesh> mesh;

// Sum of world ranks over the members of a group, computed by the group and by hand.
float group_sum_of(moe::Mesh& m, moe::Communicator& group) {
  moe::TensorPool pool;
  moe::Tensor t = pool.alloc({1});
  t.f32()[0] = static_cast<float>(m.world().rank());
  group.all_reduce(t, moe::ReduceOp::kSum);
  return t.f32()[0];
}

float group_sum(moe::Communicator& group) { return group_sum_of(*mesh, group); }

float expected_sum(const moe::Mesh& m, bool same_dr, bool same_ds, bool same_ep, bool same_tp, bool same_pp = true) {
  const moe::Layout& l = m.layout();
  const moe::MeshCoord& me = m.coord();
  float sum = 0;
  for (int64_t r = 0; r < l.world(); ++r) {
    const moe::MeshCoord c = moe::mesh_coord(l, r);
    if ((!same_dr || c.dp_replicate == me.dp_replicate) && (!same_ds || c.dp_shard == me.dp_shard) &&
        (!same_ep || c.ep == me.ep) && (!same_tp || c.tp == me.tp) && (!same_pp || c.pp == me.pp)) {
      sum += static_cast<float>(r);
    }
  }
  return sum;
}

float expected_sum(bool same_dr, bool same_ds, bool same_ep, bool same_tp) {
  return expected_sum(*mesh, same_dr, same_ds, same_ep, same_tp);
}

}  // namespace

int main(int argc, char** argv) {
  moe::ensure_mpi_initialized();
  moe::Layout l;
  l.dp_shard = 2;
  l.ep = 2;
  l.tp = 2;
  mesh = std::make_unique<moe::Mesh>(l, moe::mpi_world());
  const int failed = Catch::Session().run(argc, argv);
  mesh.reset();
  return failed ? 1 : 0;
}

TEST_CASE("group sizes and members") {
  CHECK(mesh->world().size() == 8);
  CHECK(mesh->tp().size() == 2);
  CHECK(mesh->ep().size() == 2);
  CHECK(mesh->dp_shard().size() == 2);
  CHECK(mesh->dp_replicate().size() == 1);
  CHECK(mesh->data_parallel().size() == 4);
  CHECK(group_sum(mesh->tp()) == expected_sum(true, true, true, false));
  CHECK(group_sum(mesh->ep()) == expected_sum(true, true, false, true));
  CHECK(group_sum(mesh->dp_shard()) == expected_sum(true, false, true, true));
  CHECK(group_sum(mesh->dp_replicate()) == expected_sum(false, true, true, true));
  CHECK(group_sum(mesh->data_parallel()) == expected_sum(false, false, false, true));
  CHECK(mesh->non_expert_replicas().size() == 2);
  CHECK(group_sum(mesh->non_expert_replicas()) == expected_sum(false, true, false, true));
}

TEST_CASE("with pipeline stages (pp 2 x dp_shard 2 x tp 2), every group stays within its stage but pp's") {
  moe::Layout l;
  l.pp = 2;
  l.dp_shard = 2;
  l.tp = 2;
  moe::Mesh m(l, moe::mpi_world());
  CHECK(m.coord().pp == m.world().rank() / 4);
  CHECK(m.pp().size() == 2);
  CHECK(m.pp().rank() == m.coord().pp);
  CHECK(group_sum_of(m, m.pp()) == expected_sum(m, true, true, true, true, false));
  CHECK(group_sum_of(m, m.tp()) == expected_sum(m, true, true, true, false));
  CHECK(group_sum_of(m, m.dp_shard()) == expected_sum(m, true, false, true, true));
  CHECK(m.data_parallel().size() == 2);
  CHECK(group_sum_of(m, m.data_parallel()) == expected_sum(m, false, false, false, true));
  CHECK(group_sum_of(m, m.non_expert_replicas()) == expected_sum(m, false, true, false, true));
}

TEST_CASE("a rank's place in its groups follows its coordinates") {
  const moe::MeshCoord& c = mesh->coord();
  CHECK(mesh->tp().rank() == c.tp);
  CHECK(mesh->ep().rank() == c.ep);
  CHECK(mesh->dp_shard().rank() == c.dp_shard);
  CHECK(mesh->data_parallel().rank() == moe::data_parallel_index(mesh->layout(), c));
}

TEST_CASE("a planning mesh gives each group the size and this rank the place that the real mesh does") {
  moe::Mesh plan = moe::Mesh::for_planning(mesh->layout(), mesh->world().rank());
  CHECK(plan.coord().tp == mesh->coord().tp);
  CHECK(plan.coord().ep == mesh->coord().ep);
  CHECK(plan.coord().dp_shard == mesh->coord().dp_shard);
  const std::pair<moe::Communicator*, moe::Communicator*> groups[] = {
      {&plan.world(), &mesh->world()},
      {&plan.tp(), &mesh->tp()},
      {&plan.ep(), &mesh->ep()},
      {&plan.dp_shard(), &mesh->dp_shard()},
      {&plan.dp_replicate(), &mesh->dp_replicate()},
      {&plan.pp(), &mesh->pp()},
      {&plan.data_parallel(), &mesh->data_parallel()},
      {&plan.non_expert_replicas(), &mesh->non_expert_replicas()}};
  for (const auto& [planned, real] : groups) {
    CHECK(planned->size() == real->size());
    CHECK(planned->rank() == real->rank());
  }
}
