#define CATCH_CONFIG_RUNNER
#include "tests/parallel/mpi_test_main.h"

#include <catch2/catch.hpp>

#include <memory>

namespace moe::test {
namespace {

std::unique_ptr<Communicator> world;

}  // namespace

Communicator& test_world() { return *world; }

}  // namespace moe::test

int main(int argc, char** argv) {
  moe::ensure_mpi_initialized();
  moe::test::world = moe::mpi_world();
  const int failed = Catch::Session().run(argc, argv);
  moe::test::world.reset();  // before MPI is finalised at exit
  return failed ? 1 : 0;
}
