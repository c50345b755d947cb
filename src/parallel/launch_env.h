// Who launched us and how many ranks there are, read from the launcher's
// environment (mpirun, or srun under Slurm) before any communicator exists, so
// that the first log line already carries the rank and a layout that does not
// match the job is refused before any work starts.
#pragma once

#include <cstdint>

namespace moe {

struct LaunchEnv {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  int64_t local_size = 1;  // ranks of the job on this node (1 where the launcher does not say)
};

// OpenMPI's OMPI_COMM_WORLD_*, then PMI's (with MPI_LOCALNRANKS), then Slurm's
// SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID (with SLURM_NTASKS_PER_NODE); a
// plain process is rank 0 of 1.
LaunchEnv read_launch_env();

}  // namespace moe
