#include "src/linked_libraries.h"

#include <cblas.h>
#include <dlfcn.h>
#include <mpi.h>

namespace moe {
namespace {

// The file that holds `symbol`'s code, as the loader resolved it.
std::string file_of(const void* symbol) {
  Dl_info info{};
  if (dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) return "unknown";
  return info.dli_fname;
}

// MPI_Get_library_version may be called before MPI_Init (MPI 3.0).
std::string mpi_line() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int length = 0;
  std::string version = MPI_Get_library_version(text, &length) == MPI_SUCCESS ? std::string(text, length) : "unknown";
  if (const auto cut = version.find_first_of(",\n"); cut != std::string::npos) version.resize(cut);
  return "mpi_found " + version + " (" + file_of(reinterpret_cast<const void*>(&MPI_Get_library_version)) + ")\n";
}

std::string blas_line() {
  // OpenBLAS names its build; other CBLAS libraries are named by their file.
  using GetConfig = const char* (*)();
  const auto get_config = reinterpret_cast<GetConfig>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
  const std::string version = get_config != nullptr ? get_config() : "CBLAS";
  return "blas_found " + version + " (" + file_of(reinterpret_cast<const void*>(&cblas_sgemm)) + ")\n";
}

}  // namespace

std::string linked_library_lines() { return mpi_line() + blas_line(); }

}  // namespace moe
