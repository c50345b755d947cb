// The main() of the multi-rank Catch2 tests (mpi_test_main.cc, run under
// mpirun): it initialises MPI, runs the tests on every rank, and gives them
// the world group.
#pragma once

#include "src/parallel/communicator.h"

namespace moe::test {

Communicator& test_world();

}  // namespace moe::test
