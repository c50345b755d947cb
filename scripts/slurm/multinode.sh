#!/usr/bin/env bash
# Trains on several nodes, one moe_train rank per GPU:
#   sbatch --nodes=4 scripts/slurm/multinode.sh configs/train/moe_ep_32gpu.toml --train.max_steps=1000
# Submit from the repository root (logs go to logs/, which Slurm does not
# create). `sbatch` options on the command line override the defaults below
# (e.g. --time, --partition, --account, --gpus-per-node=4 --ntasks-per-node=4).
# The binary: $MOE_TRAIN_BIN, else bazel-bin/src/moe_train, else moe_train on
# PATH; it and the config must be on a filesystem every node sees.
# Launcher: srun --mpi=pmix when Slurm has PMIx, else OpenMPI's mpirun.
# Exit: 75 from the trainer (checkpoint saved on SIGUSR1) requeues the job
# and exits 0; any other code is passed through. See docs/distributed.md.
#SBATCH --job-name=moe_train
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=16
#SBATCH --output=logs/%x-%j.out
#SBATCH --open-mode=append
#SBATCH --signal=USR1@120
#SBATCH --requeue
set -euo pipefail
MOE_SCRIPT=multinode.sh

# sbatch runs a copy of this file from its spool folder: common.sh is looked
# for next to this file, then under the submit directory.
for dir in "$(dirname "${BASH_SOURCE[0]}")" "${SLURM_SUBMIT_DIR:-$PWD}/scripts/slurm"; do
  if [[ -f $dir/common.sh ]]; then
    # shellcheck source=scripts/slurm/common.sh
    source "$dir/common.sh"
    break
  fi
done
if ! declare -F moe_main_slurm >/dev/null; then
  echo "$MOE_SCRIPT: error: scripts/slurm/common.sh not found next to this script or under ${SLURM_SUBMIT_DIR:-$PWD}; submit from the repository root" >&2
  exit 2
fi

if [[ -z ${SLURM_JOB_ID:-} ]]; then
  moe_die "not inside a Slurm job; submit it with 'sbatch --nodes=N $0 CONFIG', or use scripts/slurm/singlenode.sh for a run on this machine"
fi
moe_main_slurm "$@"
