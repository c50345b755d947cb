#include "src/parallel/launch_env.h"

#include <cstdlib>
#include <string>

namespace moe {
namespace {

bool read_int(const char* name, int64_t& out) {
  const char* v = std::getenv(name);
  if (!v || !*v) return false;
  char* end = nullptr;
  long long x = std::strtoll(v, &end, 10);
  if (*end != '\0') return false;
  out = x;
  return true;
}

// Reads one launcher's variables; rank and size must be present.
bool read_launcher(const char* rank, const char* size, const char* local_rank, const char* local_size, LaunchEnv& env) {
  LaunchEnv e;
  if (!read_int(rank, e.rank) || !read_int(size, e.world_size)) return false;
  if (!read_int(local_rank, e.local_rank)) e.local_rank = 0;
  if (!read_int(local_size, e.local_size) || e.local_size < 1) e.local_size = 1;
  env = e;
  return true;
}

}  // namespace

LaunchEnv read_launch_env() {
  LaunchEnv env;
  if (read_launcher("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                    "OMPI_COMM_WORLD_LOCAL_SIZE", env))
    return env;
  if (read_launcher("PMI_RANK", "PMI_SIZE", "PMI_LOCAL_RANK", "MPI_LOCALNRANKS", env)) return env;
  // srun sets these for every task of the step; sbatch alone (one process) too,
  // which is what SLURM_NTASKS then says.
  if (std::getenv("SLURM_STEP_ID") &&
      read_launcher("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE", env))
    return env;
  return env;
}

}  // namespace moe
