// A hang becomes an error: on 2 ranks with a 2 s collective timeout, rank 1
// never joins rank 0's all-reduce. Rank 0's watchdog must abort the whole job
// within seconds, naming the rank, the group and the operation
// (collective_timeout_test.sh checks the exit and the message).
#include <unistd.h>

#include <cstdio>

#include "src/core/tensor_pool.h"
#include "src/parallel/mesh.h"

int main() {
  moe::ensure_mpi_initialized();
  moe::Layout l;
  l.dp_shard = 2;
  moe::Mesh mesh(l, moe::mpi_world(), 2.0);
  mesh.world().barrier();  // a collective that completes is not flagged
  moe::TensorPool pool;
  const moe::Tensor t = pool.alloc({4});
  if (mesh.world().rank() == 0) {
    mesh.dp_shard().all_reduce(t, moe::ReduceOp::kSum);
  } else {
    sleep(60);  // never joins: the job must not wait for this
  }
  std::puts("not reached: the all-reduce should have been aborted");
  return 0;
}
