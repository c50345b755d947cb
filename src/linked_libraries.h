// Which MPI and BLAS this process runs with, and from which file: the two
// shared libraries a cluster's modules (or LD_LIBRARY_PATH) choose at run
// time, so `moe_train --version` shows what was really loaded.
#pragma once

#include <string>

namespace moe {

// Lines "mpi_found <version> (<path>)" and "blas_found <version> (<path>)".
std::string linked_library_lines();

}  // namespace moe
