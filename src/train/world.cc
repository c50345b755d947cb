#include "src/train/world.h"

#include <fmt/format.h>

#include <stdexcept>

#include "src/core/cuda_device.h"
#include "src/core/user_error.h"
#include "src/parallel/host_device_communicator.h"
#include "src/parallel/launch_env.h"

#if MOE_TRAIN_HAS_CUDA
#include "src/parallel/nccl_communicator.h"
#endif

namespace moe {

std::unique_ptr<Communicator> make_world(const Layout& layout, const Placement& where) {
  if (layout.world() == 1) return single_process_world();
  ensure_mpi_initialized();
  std::unique_ptr<Communicator> world = mpi_world();
  if (world->size() != layout.world()) {
    throw UserError(fmt::format(
        "MPI reports {} ranks but the launcher's environment said {}; launch with mpirun or srun --mpi=pmix so "
        "that both agree",
        world->size(), layout.world()));
  }
  if (where.device != Device::kCuda) return world;
#if MOE_TRAIN_HAS_CUDA
  select_cuda_device(read_launch_env().local_rank);
  auto nccl = std::make_unique<NcclCommunicator>(*world);  // collective over the MPI world
  return std::make_unique<HostDeviceCommunicator>(std::move(world), std::move(nccl));
#else
  throw std::logic_error("train.device = \"cuda\" in a build without CUDA");
#endif
}

}  // namespace moe
