#!/usr/bin/env bash
# Trains on one node, one moe_train rank per GPU:
#   sbatch scripts/slurm/singlenode.sh configs/train/debug_moe.toml --train.max_steps=1000
# or, outside Slurm, on this machine with NPROCS (alias NGPUS) ranks, default 1:
#   NPROCS=4 scripts/slurm/singlenode.sh configs/train/debug_moe.toml --distributed.ep=2
# (mpirun -np N; the binary itself, with exec, when N is 1; extra mpirun
# options in MPIRUN_ARGS). Submit from the repository root (logs go to logs/,
# which Slurm does not create). The binary: $MOE_TRAIN_BIN, else
# bazel-bin/src/moe_train, else moe_train on PATH.
# Exit: 75 from the trainer (checkpoint saved on SIGUSR1) requeues the Slurm
# job and exits 0; any other code is passed through. See docs/distributed.md.
#SBATCH --job-name=moe_train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=16
#SBATCH --output=logs/%x-%j.out
#SBATCH --open-mode=append
#SBATCH --signal=USR1@120
#SBATCH --requeue
set -euo pipefail
MOE_SCRIPT=singlenode.sh

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

if [[ -n ${SLURM_JOB_ID:-} ]]; then
  moe_main_slurm "$@"
else
  moe_main_local "$@"
fi
