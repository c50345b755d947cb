#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2317  # bash -c '...' conditions; helpers called through check
# scripts/slurm/{multinode,singlenode}.sh against fake srun, scontrol, mpirun
# and moe_train executables (first on PATH, in a scratch folder) that record
# their arguments: refusals, the launch command line, the preflight dry-run,
# the environment defaults, the three launch modes (srun --mpi=pmix, srun
# --mpi=pmi2, mpirun) and how each is detected, and the
# exit codes (75 -> scontrol requeue and exit 0; others passed through).
#   bash tests/slurm_scripts_test.sh [SCRIPTS_DIR_OR_ONE_SCRIPT]
# The scripts come from the argument, else Bazel's runfiles, else
# ../scripts/slurm next to this file. One line per check; exit 1 on a failure.
set -u

if [[ $# -ge 1 ]]; then
  SRC=$1
  [[ -d $SRC ]] || SRC=$(dirname "$SRC")
elif [[ -n ${TEST_SRCDIR:-} ]]; then
  SRC=$TEST_SRCDIR/${TEST_WORKSPACE:-moe_train}/scripts/slurm
else
  SRC=$(dirname "${BASH_SOURCE[0]}")/../scripts/slurm
fi
SCRIPTS=(common.sh multinode.sh singlenode.sh check_gpu_node.sh)
for s in "${SCRIPTS[@]}"; do
  [[ -f $SRC/$s ]] || { echo "FAIL setup: $SRC/$s not found"; exit 1; }
done

if [[ -n ${TEST_TMPDIR:-} ]]; then
  TMP=$(mktemp -d "$TEST_TMPDIR/slurm.XXXXXX")
else
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
fi

source "$(dirname "${BASH_SOURCE[0]}")/check.sh"  # check NAME COMMAND..., $fail
has() { [[ $1 == *"$2"* ]]; }     # has TEXT SUBSTRING
lacks() { [[ $1 != *"$2"* ]]; }
one_line() { [[ -n $1 && $(wc -l <<<"$1") -eq 1 ]]; }
q() { printf '%q ' "$@"; }         # how the fakes record an argument list

# A repository with the scripts (copied: runfiles are symlinks) and a config.
REPO=$TMP/repo
mkdir -p "$REPO/scripts/slurm" "$REPO/configs/train"
for s in "${SCRIPTS[@]}"; do cp -L "$SRC/$s" "$REPO/scripts/slurm/$s"; done
echo '[model]' >"$REPO/configs/train/x.toml"
CFG=configs/train/x.toml

# Fakes. Each appends one line to $FAKE_LOG: its name and its arguments (%q).
FAKE=$TMP/fakebin
TRAINER_DIR=$TMP/trainer
mkdir -p "$FAKE" "$TRAINER_DIR"
cat >"$FAKE/srun" <<'EOF'
#!/usr/bin/env bash
if [[ $* == --mpi=list ]]; then  # old Slurm prints on stderr, new on stdout
  if [[ ${FAKE_MPI_LIST_FD:-2} == 1 ]]; then printf '%b' "$FAKE_MPI_LIST"; else printf '%b' "$FAKE_MPI_LIST" >&2; fi
  exit 0
fi
echo "srun $(printf '%q ' "$@")" >>"$FAKE_LOG"
echo "env OMP_NUM_THREADS=${OMP_NUM_THREADS:-} NCCL_DEBUG=${NCCL_DEBUG:-} SRUN_CPUS_PER_TASK=${SRUN_CPUS_PER_TASK:-}" >>"$FAKE_LOG"
# The per-node GPU check step runs its command once per node, as Slurm does.
for ((i = 1; i <= $#; i++)); do
  if [[ ${!i} == bash && $* == *check_gpu_node.sh* ]]; then
    rc=0
    for host in $FAKE_HOSTS; do SLURMD_NODENAME=$host "${@:i}" || rc=$?; done
    exit "$rc"
  fi
done
exit "${FAKE_RC:-0}"
EOF
cat >"$FAKE/mpirun" <<'EOF'
#!/usr/bin/env bash
echo "mpirun $(printf '%q ' "$@")" >>"$FAKE_LOG"
echo "env OMP_NUM_THREADS=${OMP_NUM_THREADS:-} NCCL_DEBUG=${NCCL_DEBUG:-}" >>"$FAKE_LOG"
if [[ -n ${FAKE_MPIRUN_RUNS:-} ]]; then  # runs until USR1, then "saves" and exits 75 as the ranks would
  if [[ -n ${FAKE_MPIRUN_KEEPS_RUNNING:-} ]]; then  # forwards USR1, is then killed by TERM
    trap 'echo "mpirun got USR1" >>"$FAKE_LOG"' USR1
  else
    trap 'echo "mpirun got USR1" >>"$FAKE_LOG"; exit 75' USR1
  fi
  trap 'echo "mpirun got TERM" >>"$FAKE_LOG"; exit 1' TERM
  touch "$FAKE_LOG.running"
  for _ in $(seq 300); do sleep 0.1; done
  exit 1
fi
exit "${FAKE_RC:-0}"
EOF
cat >"$FAKE/scontrol" <<'EOF'
#!/usr/bin/env bash
echo "scontrol $(printf '%q ' "$@")" >>"$FAKE_LOG"
if [[ $1 == show && $2 == hostnames ]]; then printf '%s\n' $FAKE_HOSTS; exit 0; fi
exit "${FAKE_SCONTROL_RC:-0}"
EOF
cat >"$TRAINER_DIR/moe_train" <<'EOF'
#!/usr/bin/env bash
if [[ $* == --version ]]; then  # what the launcher choice reads; not logged
  echo "mpi_found ${FAKE_MPI:-Open MPI v4.1.4} (/opt/mpi/lib/libmpi.so.40)"
  exit 0
fi
echo "moe_train $(printf '%q ' "$@")" >>"$FAKE_LOG"
for a in "$@"; do [[ $a == --dry-run ]] && exit "${FAKE_DRYRUN_RC:-0}"; done
if [[ $1 == check-gpu ]]; then  # FAKE_CHECK_FAIL_NODE fails on that node, FAKE_CHECK_RC on every node
  if [[ ${SLURMD_NODENAME:-} == "${FAKE_CHECK_FAIL_NODE:-}" ]]; then
    echo "GPU 3 (NVIDIA H100 80GB HBM3, 79.1 GiB, sm_90): FAILED rmsnorm_forward [64, 64] bf16: out[0] = 0, the CPU gives 1.27"
    echo "moe_train: error: check-gpu failed: GPU 3 (...)" >&2
    exit 2
  fi
  [[ ${FAKE_CHECK_RC:-0} -eq 0 ]] || { echo "moe_train: error: context parallelism is not built yet" >&2; exit "$FAKE_CHECK_RC"; }
  echo "check-gpu: all 8 GPUs passed"
  exit 0
fi
exit "${FAKE_RC:-0}"
EOF
chmod +x "$FAKE"/* "$TRAINER_DIR/moe_train"
BIN=$TRAINER_DIR/moe_train

PMIX_OLD='srun: MPI types are...\nsrun: none\nsrun: pmi2\nsrun: pmix\nsrun: pmix_v3\n'
PMIX_NEW='MPI plugin types are...\n\tnone\n\tcray_shasta\n\tpmi2\n\tpmix\nspecific pmix plugin versions available: pmix_v4\n'
NO_PMIX='srun: MPI types are...\nsrun: none\nsrun: pmi2\nsrun: cray_shasta\n'
NO_PMI='srun: MPI types are...\nsrun: none\nsrun: cray_shasta\n'
SLURM=(SLURM_JOB_ID=4242 SLURM_NTASKS=16 SLURM_JOB_NUM_NODES=2 "SLURM_JOB_NODELIST=node[01-02]"
  "SLURM_TASKS_PER_NODE=8(x2)" SLURM_CPUS_PER_TASK=16 "SLURM_SUBMIT_DIR=$REPO" "FAKE_HOSTS=node01 node02"
  "FAKE_MPI_LIST=$PMIX_OLD" "MOE_TRAIN_BIN=$BIN")
OVR=(--train.max_steps=1000 "--optimizer.betas=[0.9, 0.99]")
LOG=$TMP/calls.log

# run SCRIPT_PATH [VAR=value ...] -- ARGS...: in $REPO with a clean environment;
# sets rc, err (its stderr) and calls (the fakes' log).
run() {
  local script=$1
  shift
  local -a vars=()
  while [[ $1 != -- ]]; do vars+=("$1"); shift; done
  shift
  : >"$LOG"
  (cd "$REPO" && env -i PATH="$FAKE:/usr/bin:/bin" HOME="$TMP" FAKE_LOG="$LOG" "${vars[@]}" \
    bash "$script" "$@" >"$TMP/stdout" 2>"$TMP/stderr")
  rc=$?
  err=$(cat "$TMP/stderr")
  calls=$(cat "$LOG")
}
MULTI=scripts/slurm/multinode.sh
SINGLE=scripts/slurm/singlenode.sh

# --- syntax and #SBATCH defaults
for s in "${SCRIPTS[@]}"; do check "bash -n $s" bash -n "$REPO/scripts/slurm/$s"; done
for s in multinode.sh singlenode.sh; do
  text=$(cat "$REPO/scripts/slurm/$s")
  for opt in --ntasks-per-node=8 --gpus-per-node=8 --cpus-per-task= --signal=USR1@120 --requeue \
    --output=logs/ --open-mode=append; do
    check "$s: #SBATCH $opt" grep -q "^#SBATCH $opt" <<<"$text"
  done
done
check "common.sh: the requeue exit code is one variable, 75" grep -q '^MOE_REQUEUE_EXIT_CODE=75$' "$REPO/scripts/slurm/common.sh"

# --- refusals: exit non-zero, one line, nothing launched
run $MULTI "${SLURM[@]}" --
check "no config: exits 2" test $rc -eq 2
check "no config: one line" one_line "$err"
check "no config: gives the usage" has "$err" "usage: multinode.sh CONFIG.toml"

run $MULTI "${SLURM[@]}" -- configs/train/missing.toml "${OVR[@]}"
check "missing config: exits non-zero" test $rc -ne 0
check "missing config: one line naming the file" one_line "$err"
check "missing config: names the file" has "$err" "configs/train/missing.toml not found"
check "missing config: nothing launched" test -z "$calls"

run $MULTI "${SLURM[@]}" MOE_TRAIN_BIN=/nonexistent/moe_train -- $CFG
check "MOE_TRAIN_BIN missing: exits non-zero" test $rc -ne 0
check "MOE_TRAIN_BIN missing: one line" one_line "$err"
check "MOE_TRAIN_BIN missing: names it" has "$err" "MOE_TRAIN_BIN=/nonexistent/moe_train is not an executable"
check "MOE_TRAIN_BIN missing: nothing launched" test -z "$calls"

NOBIN=("${SLURM[@]/#MOE_TRAIN_BIN=*/MOE_TRAIN_X=}")
run $MULTI "${NOBIN[@]}" -- $CFG
check "no binary anywhere: exits non-zero" test $rc -ne 0
check "no binary anywhere: one line" one_line "$err"
check "no binary anywhere: says how to build it" has "$err" "bazel build //src:moe_train"
check "no binary anywhere: nothing launched" test -z "$calls"

run $SINGLE NPROCS=2 -- configs/train/missing.toml
check "singlenode local, missing config: exits non-zero" test $rc -ne 0
check "singlenode local, missing config: one line" one_line "$err"
check "singlenode local, missing config: nothing launched" test -z "$calls"

run $MULTI MOE_TRAIN_BIN="$BIN" -- $CFG
check "multinode outside Slurm: exits 2" test $rc -eq 2
check "multinode outside Slurm: one line pointing to sbatch" bash -c '[[ $(wc -l <<<"$0") -eq 1 && $0 == *sbatch* ]]' "$err"
check "multinode outside Slurm: nothing launched" test -z "$calls"

# --- finding the binary
mkdir -p "$REPO/bazel-bin/src" && cp "$BIN" "$REPO/bazel-bin/src/moe_train"
run $MULTI "${NOBIN[@]}" -- $CFG
check "binary from bazel-bin/src/moe_train" has "$calls" "srun $(q --mpi=pmix "$REPO/bazel-bin/src/moe_train" $CFG)"
rm -r "$REPO/bazel-bin"
run $MULTI "${NOBIN[@]}" PATH="$FAKE:$TRAINER_DIR:/usr/bin:/bin" -- $CFG
check "binary from PATH" has "$calls" "srun $(q --mpi=pmix "$BIN" $CFG)"

# --- srun --mpi=pmix launch
run $MULTI "${SLURM[@]}" -- $CFG "${OVR[@]}"
check "pmix: exits 0 when the trainer does" test $rc -eq 0
check "pmix: srun --mpi=pmix BIN CONFIG OVERRIDES (arguments intact)" has "$calls" "srun $(q --mpi=pmix "$BIN" $CFG "${OVR[@]}")"
check "pmix: preflight dry-run for 16 ranks" has "$calls" "moe_train $(q $CFG "${OVR[@]}" --dry-run --world-size=16)"
check "pmix: preflight runs before the launch" bash -c '[[ $(head -1 <<<"$0") == moe_train* ]]' "$calls"
check "pmix: mpirun not used" lacks "$calls" "mpirun"
check "pmix: no requeue" lacks "$calls" "requeue"
check "env: OMP_NUM_THREADS=SLURM_CPUS_PER_TASK, NCCL_DEBUG=WARN, SRUN_CPUS_PER_TASK" \
  has "$calls" "env OMP_NUM_THREADS=16 NCCL_DEBUG=WARN SRUN_CPUS_PER_TASK=16"

run $MULTI "${SLURM[@]}" OMP_NUM_THREADS=4 NCCL_DEBUG=INFO -- $CFG
check "env: the user's OMP_NUM_THREADS and NCCL_DEBUG are kept" has "$calls" "env OMP_NUM_THREADS=4 NCCL_DEBUG=INFO"

run $MULTI "${SLURM[@]}" FAKE_MPI_LIST="$PMIX_NEW" FAKE_MPI_LIST_FD=1 -- $CFG
check "pmix found in newer Slurm's list (stdout)" has "$calls" "srun $(q --mpi=pmix "$BIN" $CFG)"

run $MULTI "${SLURM[@]}" FAKE_DRYRUN_RC=2 -- $CFG "${OVR[@]}"
check "preflight refuses the layout: exits 2" test $rc -eq 2
check "preflight refuses the layout: nothing launched" bash -c '[[ $0 != *srun* && $0 != *mpirun* ]]' "$calls"
# --- the per-node GPU check: one task per node, before any rank starts
run $MULTI "${SLURM[@]}" -- $CFG "${OVR[@]}"
check "GPU check: srun with one task on each of the 2 nodes" \
  has "$calls" "srun --nodes=2 --ntasks=2 --ntasks-per-node=1 bash $REPO/scripts/slurm/check_gpu_node.sh"
check "GPU check: moe_train check-gpu CONFIG OVERRIDES --world-size=16 --for-training on each node" \
  test "$(grep -cxF "moe_train $(q check-gpu $CFG "${OVR[@]}" --world-size=16 --for-training)" <<<"$calls")" -eq 2
order=$(grep -oE "^(moe_train check-gpu|srun --mpi=pmix|moe_train .*--dry-run)" <<<"$calls" | sed 's/ .*--dry-run/ dry-run/' | tr '\n' '|')
check "GPU check: after the dry-run, before the launch" \
  test "$order" = "moe_train dry-run|moe_train check-gpu|moe_train check-gpu|srun --mpi=pmix|"
check "GPU check: its lines are prefixed with the node" grep -q "^node02: check-gpu: all 8 GPUs passed" "$TMP/stdout"

run $MULTI "${SLURM[@]}" FAKE_CHECK_FAIL_NODE=node02 -- $CFG "${OVR[@]}"
check "GPU check fails on node02: the job exits 2" test $rc -eq 2
check "GPU check fails on node02: the error names the node" has "$err" "node node02 failed the GPU check"
check "GPU check fails on node02: the failing op is in the log" grep -q "^node02: GPU 3 (.*): FAILED rmsnorm_forward" "$TMP/stdout"
check "GPU check fails on node02: nothing launched" bash -c '[[ $0 != *"srun --mpi=pmix"* && $0 != *mpirun* ]]' "$calls"

run $MULTI "${SLURM[@]}" FAKE_CHECK_RC=2 -- $CFG "${OVR[@]}"
check "a config training refuses is refused by the GPU check step: exits 2" test $rc -eq 2
check "a config training refuses: nothing launched" bash -c '[[ $0 != *"srun --mpi=pmix"* && $0 != *mpirun* ]]' "$calls"

run $MULTI "${SLURM[@]}" FAKE_CHECK_FAIL_NODE=node02 MOE_TRAIN_GPU_CHECK=0 -- $CFG
check "MOE_TRAIN_GPU_CHECK=0: no check" lacks "$calls" "check-gpu"
check "MOE_TRAIN_GPU_CHECK=0: launched" has "$calls" "srun --mpi=pmix"

run $MULTI "${SLURM[@]}" FAKE_DRYRUN_RC=2 MOE_TRAIN_PREFLIGHT=0 -- $CFG
check "MOE_TRAIN_PREFLIGHT=0: no dry-run" lacks "$calls" "--dry-run"
check "MOE_TRAIN_PREFLIGHT=0: launched" has "$calls" "srun --mpi=pmix"

# --- TERM or Ctrl-C to the script reach mpirun's ranks as USR1 (save, exit 75, requeue)
for sig in TERM INT; do
  : >"$LOG"
  rm -f "$LOG.running"
  (cd "$REPO" && exec env -i PATH="$FAKE:/usr/bin:/bin" HOME="$TMP" FAKE_LOG="$LOG" "${SLURM[@]}" FAKE_MPI_LIST="$NO_PMIX" \
    FAKE_MPIRUN_RUNS=1 MOE_TRAIN_GPU_CHECK=0 bash $MULTI $CFG >"$TMP/stdout" 2>"$TMP/stderr") &
  script=$!
  for _ in $(seq 100); do [[ -e $LOG.running ]] && break; sleep 0.1; done
  kill -"$sig" "$script"
  wait "$script"
  rc=$?
  calls=$(cat "$LOG")
  check "$sig to the script (mpirun launcher): mpirun gets USR1" has "$calls" "mpirun got USR1"
  check "$sig to the script: not TERM (which would kill the ranks unsaved)" lacks "$calls" "mpirun got TERM"
  check "$sig to the script: exit 75 becomes scontrol requeue 4242, exit 0" \
    bash -c '[[ $0 == *"scontrol requeue 4242"* && $1 -eq 0 ]]' "$calls" "$rc"
done
# scancel signals mpirun too, which then exits 1 after its ranks saved: still a requeue.
: >"$LOG"
rm -f "$LOG.running"
(cd "$REPO" && exec env -i PATH="$FAKE:/usr/bin:/bin" HOME="$TMP" FAKE_LOG="$LOG" "${SLURM[@]}" FAKE_MPI_LIST="$NO_PMIX" \
  FAKE_MPIRUN_RUNS=1 FAKE_MPIRUN_KEEPS_RUNNING=1 MOE_TRAIN_GPU_CHECK=0 bash $MULTI $CFG >"$TMP/stdout" 2>"$TMP/stderr") &
script=$!
for _ in $(seq 100); do [[ -e $LOG.running ]] && break; sleep 0.1; done
kill -TERM "$script"
for _ in $(seq 100); do grep -q "mpirun got USR1" "$LOG" && break; sleep 0.1; done
pkill -TERM -f "$FAKE/mpirun"
wait "$script"
rc=$?
calls=$(cat "$LOG")
check "TERM to the script and to mpirun: mpirun's exit 1 counts as the preemption (requeue, exit 0)" \
  bash -c '[[ $0 == *"mpirun got TERM"* && $0 == *"scontrol requeue 4242"* && $1 -eq 0 ]]' "$calls" "$rc"

# --- exit codes
run $MULTI "${SLURM[@]}" FAKE_RC=75 -- $CFG "${OVR[@]}"
check "exit 75: scontrol requeue 4242" has "$calls" "scontrol requeue 4242"
check "exit 75: the script exits 0" test $rc -eq 0
run $MULTI "${SLURM[@]}" FAKE_RC=3 -- $CFG
check "exit 3: passed through" test $rc -eq 3
check "exit 3: no requeue" lacks "$calls" "requeue"
run $MULTI "${SLURM[@]}" FAKE_RC=75 FAKE_SCONTROL_RC=1 -- $CFG
check "exit 75, requeue refused: exits 75" test $rc -eq 75

# --- mpirun fallback when Slurm has no pmix
run $MULTI "${SLURM[@]}" FAKE_MPI_LIST="$NO_PMIX" -- $CFG "${OVR[@]}"
check "no pmix: mpirun -np 16 --host node01:8,node02:8" has "$calls" "mpirun $(q -np 16 --host node01:8,node02:8)"
check "no pmix: mpirun runs BIN CONFIG OVERRIDES" has "$calls" "$(q "$BIN" $CFG "${OVR[@]}")"
check "no pmix: passes NCCL_DEBUG to the ranks" has "$calls" "$(q -x NCCL_DEBUG)"
check "no pmix: passes OMP_NUM_THREADS to the ranks" has "$calls" "$(q -x OMP_NUM_THREADS)"
check "no pmix: srun not used to launch (only for the per-node GPU check)" \
  test "$(grep -c "^srun " <<<"$calls")" -eq "$(grep -c "^srun .*check_gpu_node.sh" <<<"$calls")"
check "no pmix: exits 0" test $rc -eq 0
run $MULTI "${SLURM[@]}" FAKE_MPI_LIST="$NO_PMIX" FAKE_RC=75 -- $CFG
check "no pmix, exit 75: scontrol requeue 4242" has "$calls" "scontrol requeue 4242"
check "no pmix, exit 75: exits 0" test $rc -eq 0
run $MULTI "${SLURM[@]}" FAKE_MPI_LIST="$NO_PMIX" FAKE_RC=3 -- $CFG
check "no pmix, exit 3: passed through" test $rc -eq 3
run $MULTI "${SLURM[@]}" MOE_TRAIN_LAUNCHER=mpirun -- $CFG
check "MOE_TRAIN_LAUNCHER=mpirun forces mpirun" has "$calls" "mpirun $(q -np 16)"
run $MULTI "${SLURM[@]}" SLURM_NTASKS=3 "SLURM_TASKS_PER_NODE=2,1" "FAKE_HOSTS=a b" FAKE_MPI_LIST="$NO_PMIX" -- $CFG
check "no pmix, uneven tasks per node: --host a:2,b:1" has "$calls" "mpirun $(q -np 3 --host a:2,b:1)"

# --- the three launch modes, and why each was chosen (printed)
run $MULTI "${SLURM[@]}" -- $CFG
check "mode pmix: the choice and its reason are printed" grep -q "launcher pmix (srun --mpi=list offers pmix)" "$TMP/stdout"
run $MULTI "${SLURM[@]}" FAKE_MPI_LIST="$NO_PMIX" "FAKE_MPI=MPICH Version: 4.1.2" -- $CFG "${OVR[@]}"
check "mode pmi2: Slurm without pmix, MPICH: srun --mpi=pmi2 BIN CONFIG OVERRIDES" \
  has "$calls" "srun $(q --mpi=pmi2 "$BIN" $CFG "${OVR[@]}")"
check "mode pmi2: mpirun not used" lacks "$calls" "mpirun"
check "mode pmi2: the reason names the MPI" grep -q "launcher pmi2 (.*pmi2 but not pmix, and the MPI is MPICH Version: 4.1.2)" "$TMP/stdout"
run $MULTI "${SLURM[@]}" FAKE_MPI_LIST="$NO_PMIX" -- $CFG
check "mode mpirun: Slurm without pmix, Open MPI: mpirun" has "$calls" "mpirun $(q -np 16)"
check "mode mpirun: the reason says Open MPI needs pmix or mpirun" grep -q "launcher mpirun (.*Open MPI starts from pmix or its own mpirun)" "$TMP/stdout"
run $MULTI "${SLURM[@]}" FAKE_MPI_LIST="$NO_PMI" "FAKE_MPI=MPICH Version: 4.1.2" -- $CFG
check "mode mpirun: Slurm with neither pmix nor pmi2" has "$calls" "mpirun $(q -np 16)"
check "mode mpirun: that reason is printed" grep -q "launcher mpirun (srun --mpi=list offers neither pmix nor pmi2)" "$TMP/stdout"
run $MULTI "${SLURM[@]}" MOE_TRAIN_LAUNCHER=pmi2 -- $CFG
check "MOE_TRAIN_LAUNCHER=pmi2 forces srun --mpi=pmi2" has "$calls" "srun $(q --mpi=pmi2 "$BIN" $CFG)"
check "MOE_TRAIN_LAUNCHER=pmi2: printed as forced" grep -q "launcher pmi2 (MOE_TRAIN_LAUNCHER=pmi2)" "$TMP/stdout"
run $MULTI "${SLURM[@]}" MOE_TRAIN_LAUNCHER=pmix FAKE_MPI_LIST="$NO_PMI" -- $CFG
check "MOE_TRAIN_LAUNCHER=pmix forces srun --mpi=pmix" has "$calls" "srun $(q --mpi=pmix "$BIN" $CFG)"
run $MULTI "${SLURM[@]}" MOE_TRAIN_LAUNCHER=orterun -- $CFG
check "MOE_TRAIN_LAUNCHER=orterun: exits 2" test $rc -eq 2
check "MOE_TRAIN_LAUNCHER=orterun: one line naming the choices" bash -c '[[ $(wc -l <<<"$0") -eq 1 && $0 == *"must be pmix, pmi2 or mpirun"* ]]' "$err"
check "MOE_TRAIN_LAUNCHER=orterun: nothing launched" bash -c '[[ $0 != *"srun --mpi"* && $0 != *mpirun* ]]' "$calls"

# --- sbatch runs a copy of the script from its spool folder
mkdir -p "$TMP/spool" && cp "$REPO/$MULTI" "$TMP/spool/slurm_script"
run "$TMP/spool/slurm_script" "${SLURM[@]}" -- $CFG
check "spool copy: finds common.sh under SLURM_SUBMIT_DIR and launches" has "$calls" "srun --mpi=pmix"
check "spool copy: exits 0" test $rc -eq 0

# --- singlenode.sh: under Slurm, and on this machine
run $SINGLE "${SLURM[@]}" SLURM_NTASKS=8 SLURM_JOB_NUM_NODES=1 "SLURM_TASKS_PER_NODE=8" "FAKE_HOSTS=node01" \
  FAKE_RC=75 -- $CFG "${OVR[@]}"
check "singlenode under Slurm: srun --mpi=pmix BIN CONFIG OVERRIDES" has "$calls" "srun $(q --mpi=pmix "$BIN" $CFG "${OVR[@]}")"
check "singlenode under Slurm, exit 75: scontrol requeue 4242" has "$calls" "scontrol requeue 4242"
check "singlenode under Slurm, exit 75: exits 0" test $rc -eq 0

run $SINGLE MOE_TRAIN_BIN="$BIN" NPROCS=4 -- $CFG "${OVR[@]}"
check "local NPROCS=4: mpirun -np 4" has "$calls" "mpirun $(q -np 4)"
check "local NPROCS=4: BIN CONFIG OVERRIDES" has "$calls" "$(q "$BIN" $CFG "${OVR[@]}")"
check "local NPROCS=4: no srun, no scontrol" bash -c '[[ $0 != *srun* && $0 != *scontrol* ]]' "$calls"
cores=$(nproc)
threads=$((cores / 4 > 0 ? cores / 4 : 1))
check "local NPROCS=4: OMP_NUM_THREADS = cores / ranks ($threads)" has "$calls" "env OMP_NUM_THREADS=$threads NCCL_DEBUG=WARN"
if ((cores < 4)); then
  check "local NPROCS=4 on $cores cores: --oversubscribe" has "$calls" "--oversubscribe"
fi
run $SINGLE MOE_TRAIN_BIN="$BIN" NGPUS=2 -- $CFG
check "local NGPUS=2: mpirun -np 2" has "$calls" "mpirun $(q -np 2)"
run $SINGLE MOE_TRAIN_BIN="$BIN" NPROCS=4 FAKE_RC=3 -- $CFG
check "local, exit 3: passed through" test $rc -eq 3
run $SINGLE MOE_TRAIN_BIN="$BIN" NPROCS=4 FAKE_RC=75 -- $CFG
check "local, exit 75: passed through" test $rc -eq 75
check "local, exit 75: no scontrol" lacks "$calls" "scontrol"
run $SINGLE MOE_TRAIN_BIN="$BIN" -- $CFG "${OVR[@]}"
check "local, one rank: only the binary itself, with CONFIG OVERRIDES" test "$calls" = "moe_train $(q $CFG "${OVR[@]}")"
check "local, one rank: exits 0" test $rc -eq 0
run $SINGLE MOE_TRAIN_BIN="$BIN" FAKE_RC=3 -- $CFG
check "local, one rank: exit code passed through" test $rc -eq 3
run $SINGLE MOE_TRAIN_BIN="$BIN" NPROCS=zero -- $CFG
check "local NPROCS=zero: exits 2" test $rc -eq 2
check "local NPROCS=zero: one line" one_line "$err"

exit $fail
