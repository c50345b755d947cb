# shellcheck shell=bash
# Shared by multinode.sh and singlenode.sh (sourced, never run): finds the
# binary, checks the arguments, sets environment defaults, picks the launcher
# (srun --mpi=pmix, srun --mpi=pmi2 or Open MPI's mpirun), launches one rank per task and
# turns the trainer's "preempted, checkpoint saved" exit code into a requeue.
# The caller sets MOE_SCRIPT (its name, for messages) before calling a
# moe_main_* function.

# The trainer's exit code for "checkpoint saved on a preemption signal
# (SIGUSR1), run me again": EX_TEMPFAIL from sysexits.h. Under Slurm it becomes
# `scontrol requeue $SLURM_JOB_ID` and exit 0; any other code passes through.
MOE_REQUEUE_EXIT_CODE=75

# This file lives in scripts/slurm/ of the repository, beside check_gpu_node.sh.
MOE_SLURM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MOE_REPO_ROOT=$(cd "$MOE_SLURM_DIR/../.." && pwd)

moe_die() {  # one line on stderr, exit 2 (the trainer's code for a user error)
  echo "$MOE_SCRIPT: error: $*" >&2
  exit 2
}

moe_log() { echo "$MOE_SCRIPT: $*"; }

# Sets MOE_CONFIG and MOE_ARGS (config then overrides), or refuses.
moe_parse_args() {
  if [[ $# -eq 0 || $1 == -* ]]; then
    moe_die "no config given: usage: $MOE_SCRIPT CONFIG.toml [--section.key=value ...], e.g. configs/train/debug_moe.toml"
  fi
  MOE_CONFIG=$1
  if [[ ! -f $MOE_CONFIG ]]; then
    moe_die "config $MOE_CONFIG not found (relative paths start at $PWD); pass an existing TOML file, e.g. configs/train/debug_moe.toml"
  fi
  MOE_ARGS=("$@")
}

# Sets MOE_BIN: $MOE_TRAIN_BIN, else bazel-bin/src/moe_train, else moe_train on PATH.
moe_find_binary() {
  local bin
  if [[ -n ${MOE_TRAIN_BIN:-} ]]; then
    bin=$MOE_TRAIN_BIN
    if [[ ! -f $bin || ! -x $bin ]]; then
      moe_die "MOE_TRAIN_BIN=$bin is not an executable file; point it at a built moe_train, or unset it to use bazel-bin/src/moe_train"
    fi
  elif [[ -x $MOE_REPO_ROOT/bazel-bin/src/moe_train ]]; then
    bin=$MOE_REPO_ROOT/bazel-bin/src/moe_train
  elif bin=$(command -v moe_train); then
    :
  else
    moe_die "no moe_train binary (MOE_TRAIN_BIN unset, no $MOE_REPO_ROOT/bazel-bin/src/moe_train, none on PATH); build it with 'bazel build //src:moe_train' or set MOE_TRAIN_BIN=/path/to/moe_train"
  fi
  [[ $bin == /* ]] || bin=$PWD/$bin
  MOE_BIN=$bin
}

# Defaults only where the user has not set a value. NCCL_SOCKET_IFNAME,
# NCCL_IB_HCA and the other fabric settings are the cluster's to choose.
moe_env_defaults() {  # THREADS_PER_RANK
  export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$1}
}

# Runs mpirun in the background, so that this script takes TERM and INT
# (scancel, a preemption, Ctrl-C) and passes them on as USR1, which mpirun
# forwards to every rank and the trainer takes as "save and stop" (exit 75).
# Left alone, mpirun would kill the ranks before they save. (srun forwards
# signals to the ranks itself.) Sets rc to the launcher's exit code; after
# such a signal any failure of mpirun counts as the preemption it was (75):
# scancel also signals mpirun itself, which then exits 1 after its ranks saved.
moe_launch_forwarding_signals() {
  # The launcher gets a process group of its own (job control on): Ctrl-C in
  # a terminal signals the foreground group, and mpirun would kill the ranks
  # on it before they save; only this script should see it.
  set -m
  "$@" &
  local pid=$! interrupted=0 signalled=0
  set +m
  trap 'interrupted=1; signalled=1; moe_log "signal received: asking the ranks to save a checkpoint and stop (USR1)" >&2; kill -USR1 "$pid" 2>/dev/null' TERM INT
  while :; do
    interrupted=0
    rc=0
    wait "$pid" || rc=$?
    # A trapped signal ends `wait` early, the launcher still running: wait again.
    if [[ $interrupted -eq 1 && $rc -gt 128 ]] && kill -0 "$pid" 2>/dev/null; then continue; fi
    break
  done
  trap - TERM INT
  if [[ $signalled -eq 1 && $rc -ne 0 && $rc -ne $MOE_REQUEUE_EXIT_CODE ]]; then
    moe_log "mpirun exited $rc after the signal; the ranks were asked to save: treating it as a preemption" >&2
    rc=$MOE_REQUEUE_EXIT_CODE
  fi
}

# Exits with the right code for the trainer's exit code.
moe_finish() {  # RC
  local rc=$1
  if [[ $rc -ne $MOE_REQUEUE_EXIT_CODE ]]; then
    [[ $rc -eq 0 ]] || moe_log "trainer exited with code $rc" >&2
    exit "$rc"
  fi
  if [[ -z ${SLURM_JOB_ID:-} ]]; then
    moe_log "trainer saved a checkpoint and stopped (exit $rc); run the same command again to resume" >&2
    exit "$rc"
  fi
  moe_log "trainer saved a checkpoint and stopped (exit $rc): scontrol requeue $SLURM_JOB_ID"
  if scontrol requeue "$SLURM_JOB_ID"; then
    exit 0
  fi
  moe_log "error: scontrol requeue $SLURM_JOB_ID failed (was the job submitted with --requeue?); resubmit it to resume" >&2
  exit "$rc"
}

# "8(x2),4" (SLURM_TASKS_PER_NODE) -> "8 8 4"
moe_expand_tasks_per_node() {
  local item n r i out=()
  local -a items
  IFS=, read -ra items <<<"$1"
  for item in "${items[@]}"; do
    if [[ $item =~ ^([0-9]+)\(x([0-9]+)\)$ ]]; then
      n=${BASH_REMATCH[1]} r=${BASH_REMATCH[2]}
    else
      n=$item r=1
    fi
    for ((i = 0; i < r; i++)); do out+=("$n"); done
  done
  echo "${out[*]}"
}

# The launcher, by what the site offers, as "LAUNCHER WHY":
#   pmix    srun --mpi=pmix, where Slurm has its PMIx plugin (Open MPI 4 and
#           5 built with PMIx, MPICH 4, recent Intel MPI);
#   pmi2    srun --mpi=pmi2, where Slurm has PMI-2 but not PMIx and the
#           binary's MPI is not Open MPI (MPICH, MVAPICH and Intel MPI start
#           from PMI-2; Open MPI only when built --with-pmi, which few are);
#   mpirun  Open MPI's mpirun with the allocation's hosts, otherwise.
# MOE_TRAIN_LAUNCHER=pmix|pmi2|mpirun forces one ("srun" is pmix). Older
# Slurm prints `srun --mpi=list` on stderr, newer on stdout.
moe_pick_launcher() {
  case ${MOE_TRAIN_LAUNCHER:-} in
    pmix | srun) echo "pmix MOE_TRAIN_LAUNCHER=$MOE_TRAIN_LAUNCHER"; return ;;
    pmi2 | mpirun) echo "$MOE_TRAIN_LAUNCHER MOE_TRAIN_LAUNCHER=$MOE_TRAIN_LAUNCHER"; return ;;
    "") ;;
    *) moe_die "MOE_TRAIN_LAUNCHER=$MOE_TRAIN_LAUNCHER: must be pmix, pmi2 or mpirun (or unset to detect)" ;;
  esac
  local plugins mpi
  plugins=$(srun --mpi=list 2>&1) || true
  if grep -Eq '(^|[[:space:]])pmix([[:space:]]|_v[0-9]|$)' <<<"$plugins"; then
    echo "pmix srun --mpi=list offers pmix"
    return
  fi
  # The MPI library the binary loads here (moe_train --version: mpi_found).
  mpi=$("$MOE_BIN" --version 2>/dev/null | sed -n 's/^mpi_found //p' | head -1) || true
  if grep -Eq '(^|[[:space:]])pmi2([[:space:]]|$)' <<<"$plugins"; then
    if [[ -n $mpi && $mpi != *"Open MPI"* ]]; then
      echo "pmi2 srun --mpi=list offers pmi2 but not pmix, and the MPI is ${mpi%% (*}"
    else
      echo "mpirun srun --mpi=list offers pmi2 but not pmix, and Open MPI starts from pmix or its own mpirun"
    fi
    return
  fi
  echo "mpirun srun --mpi=list offers neither pmix nor pmi2"
}

# Inside a Slurm allocation: one rank per task of the job.
moe_main_slurm() {
  moe_parse_args "$@"
  moe_find_binary
  local world=${SLURM_NTASKS:-${SLURM_NPROCS:-}}
  if [[ -z $world ]]; then  # an allocation without --ntasks: srun starts SLURM_TASKS_PER_NODE per node
    local t
    world=0
    for t in $(moe_expand_tasks_per_node "${SLURM_TASKS_PER_NODE:-1}"); do world=$((world + t)); done
  fi
  local nodes=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
  moe_env_defaults "${SLURM_CPUS_PER_TASK:-1}"
  # Slurm >= 22.05: srun no longer inherits --cpus-per-task from sbatch.
  if [[ -n ${SLURM_CPUS_PER_TASK:-} ]]; then export SRUN_CPUS_PER_TASK=${SRUN_CPUS_PER_TASK:-$SLURM_CPUS_PER_TASK}; fi
  local pick launcher
  pick=$(moe_pick_launcher) || exit
  launcher=${pick%% *}
  moe_log "job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}): $nodes node(s), $world rank(s), binary $MOE_BIN"
  moe_log "launcher $launcher (${pick#* })"

  # Check the layout against the rank count (and log sizes and memory per
  # rank) in one process before starting all of them.
  if [[ ${MOE_TRAIN_PREFLIGHT:-1} != 0 ]]; then
    local rc=0
    "$MOE_BIN" "${MOE_ARGS[@]}" --dry-run --world-size="$world" || rc=$?
    if [[ $rc -ne 0 ]]; then
      moe_log "the config does not run on $world ranks (moe_train --dry-run --world-size=$world exited $rc); nothing launched" >&2
      exit "$rc"
    fi
    # Each node checks its GPUs, one task per node, before any rank starts
    # (check_gpu_node.sh); the config is refused there as training refuses it.
    if [[ ${MOE_TRAIN_GPU_CHECK:-1} != 0 ]]; then
      rc=0
      srun --nodes="$nodes" --ntasks="$nodes" --ntasks-per-node=1 \
        bash "$MOE_SLURM_DIR/check_gpu_node.sh" "$MOE_BIN" "${MOE_ARGS[@]}" --world-size="$world" || rc=$?
      if [[ $rc -ne 0 ]]; then
        moe_log "the GPU check failed on a node (named above); nothing launched (MOE_TRAIN_GPU_CHECK=0 skips the check)" >&2
        exit 2
      fi
    fi
  fi

  local -a cmd
  if [[ $launcher != mpirun ]]; then
    cmd=(srun "--mpi=$launcher" "$MOE_BIN" "${MOE_ARGS[@]}")
  else
    # OpenMPI's mpirun with the allocation's hosts and slots.
    local -a hosts counts pass_env=()
    mapfile -t hosts < <(scontrol show hostnames "${SLURM_JOB_NODELIST:-${SLURM_NODELIST:-}}")
    if [[ -n ${SLURM_TASKS_PER_NODE:-} ]]; then
      read -ra counts <<<"$(moe_expand_tasks_per_node "$SLURM_TASKS_PER_NODE")"
    fi
    local hostlist="" i
    for i in "${!hosts[@]}"; do
      hostlist+="${hostlist:+,}${hosts[$i]}:${counts[$i]:-$((world / ${#hosts[@]}))}"
    done
    local v
    for v in $(compgen -e); do
      if [[ $v == NCCL_* || $v == OMP_NUM_THREADS || $v == MOE_TRAIN_* ]]; then pass_env+=(-x "$v"); fi
    done
    cmd=(mpirun -np "$world")
    [[ -z $hostlist ]] || cmd+=(--host "$hostlist")
    cmd+=(--bind-to none "${pass_env[@]}" "$MOE_BIN" "${MOE_ARGS[@]}")
  fi
  moe_log "+ ${cmd[*]}"
  local rc=0
  if [[ $launcher != mpirun ]]; then
    "${cmd[@]}" || rc=$?
  else
    moe_launch_forwarding_signals "${cmd[@]}"
  fi
  moe_finish "$rc"
}

# Outside Slurm, on this machine: NPROCS (or NGPUS) ranks, default 1.
moe_main_local() {
  moe_parse_args "$@"
  moe_find_binary
  local n=${NPROCS:-${NGPUS:-1}}
  if [[ ! $n =~ ^[1-9][0-9]*$ ]]; then
    moe_die "NPROCS/NGPUS=$n: must be a positive rank count, e.g. NPROCS=4"
  fi
  local cores
  cores=$(nproc 2>/dev/null || echo 1)
  moe_env_defaults "$(((cores / n) > 0 ? cores / n : 1))"
  if [[ $n -eq 1 ]]; then
    moe_log "+ $MOE_BIN ${MOE_ARGS[*]}"
    exec "$MOE_BIN" "${MOE_ARGS[@]}"
  fi
  local -a cmd=(mpirun -np "$n")
  ((n <= cores)) || cmd+=(--oversubscribe)
  # Extra mpirun options, e.g. MPIRUN_ARGS="--allow-run-as-root".
  local -a extra
  read -ra extra <<<"${MPIRUN_ARGS:-}"
  cmd+=("${extra[@]}" "$MOE_BIN" "${MOE_ARGS[@]}")
  moe_log "+ ${cmd[*]}"
  local rc=0
  moe_launch_forwarding_signals "${cmd[@]}"
  moe_finish "$rc"
}
