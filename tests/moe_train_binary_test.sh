#!/usr/bin/env bash
# The real binary, as a user runs it: exit codes, one-line errors with no
# stack trace, and a bad layout under mpirun refused on every rank with one
# message (from rank 0) and no hang.
set -u
BIN="$1"
source "$(dirname "${BASH_SOURCE[0]}")/check.sh"  # check NAME CONDITION..., $fail

out=$("$BIN" configs/train/debug_moe.toml --dry-run 2>/dev/null); rc=$?
check "dry-run exits 0" test "$rc" -eq 0
check "dry-run prints the table" grep -q "active per token" <<<"$out"

err=$("$BIN" configs/train/debug_moe.toml --model.moe_top_k=9 2>&1 >/dev/null); rc=$?
check "bad config exits 2" test "$rc" -eq 2
check "bad config prints one line" test "$(wc -l <<<"$err")" -eq 1
check "bad config names the key" grep -q "model.moe_top_k = 9" <<<"$err"

printf '[model]\ndim = 64\nn_heads = [\n' > "$TEST_TMPDIR/broken.toml"
err=$("$BIN" "$TEST_TMPDIR/broken.toml" 2>&1); rc=$?
check "syntax error exits 2" test "$rc" -eq 2
check "syntax error gives file:line:col" grep -q "broken.toml:[0-9]*:[0-9]*: TOML syntax error" <<<"$err"
check "no stack trace or abort" bash -c '! grep -qiE "terminate|abort|backtrace" <<<"$0"' "$err"

# Sizes beyond any model: one line naming the key and exit 2, in --dry-run
# and in training, never an overflow, a hang or an abort.
for size in model.num_experts=1000000000 model.vocab_size=2000000000 train.batch_size=100000000 model.dim=1048576 \
            model.n_layers=2147483647 model.num_experts=9223372036854775807; do
  for mode in --dry-run --train.max_steps=1; do
    err=$(timeout 60 "$BIN" configs/train/debug_moe.toml --train.device=cpu "--$size" "$mode" \
          --checkpoint.dir="$TEST_TMPDIR/ckpt_huge" 2>&1 >/dev/null); rc=$?
    check "$size $mode: exit 2 with one line naming the key and its bound" \
      bash -c '[ "$1" -eq 2 ] && [ "$(wc -l <<<"$0")" -eq 1 ] && grep -q "^moe_train: error: ${2%%=*} = ${2#*=}: must be at most" <<<"$0"' \
      "$err" "$rc" "$size"
  done
done
# A plan larger than this machine's memory: refused before anything is allocated, with both numbers.
for mode in --dry-run --train.max_steps=1; do
  err=$("$BIN" configs/train/debug_moe.toml --train.device=cpu --model.dim=65536 "$mode" \
        --checkpoint.dir="$TEST_TMPDIR/ckpt_huge" 2>&1 >/dev/null); rc=$?
  check "a 6 TB plan $mode: exit 2" test "$rc" -eq 2
  check "a 6 TB plan $mode: one line with the plan, the memory there and what to lower" \
    grep -q "^moe_train: error: the plan needs 5954.04 GiB per rank, and this machine's host RAM has [0-9.]* GiB for it: it cannot fit; lower train.batch_size" <<<"$err"
done
check "a refused plan leaves no checkpoint folder behind" test ! -e "$TEST_TMPDIR/ckpt_huge/step_1"
# An allocation that fails anyway (here under a 3 GB address-space limit): a message and exit 2, not an abort.
err=$(ulimit -v 3000000; "$BIN" configs/train/debug_moe.toml --train.device=cpu --train.batch_size=64 --train.max_steps=1 \
      --checkpoint.dir="$TEST_TMPDIR/ckpt_big" 2>&1 >/dev/null); rc=$?
check "out of memory in an allocation: exit 2" test "$rc" -eq 2
check "out of memory in an allocation: says so and what to do" grep -q "moe_train: error: out of host memory.*--dry-run" <<<"$err"
check "out of memory in an allocation: no abort" bash -c '! grep -qiE "terminate|abort|bad_alloc" <<<"$0"' "$err"

for bad in empty comments dir; do
  case $bad in
    empty) : >"$TEST_TMPDIR/empty.toml"; cfg="$TEST_TMPDIR/empty.toml" ;;
    comments) printf '# only a comment\n\n' >"$TEST_TMPDIR/comments.toml"; cfg="$TEST_TMPDIR/comments.toml" ;;
    dir) mkdir -p "$TEST_TMPDIR/configs_dir"; cfg="$TEST_TMPDIR/configs_dir" ;;
  esac
  err=$("$BIN" "$cfg" --dry-run 2>&1 >/dev/null); rc=$?
  check "a config that is $bad: exit 2, one line" bash -c '[ "$1" -eq 2 ] && [ "$(wc -l <<<"$0")" -eq 1 ]' "$err" "$rc"
  check "a config that is $bad: says so" grep -qE "is (empty|a directory)" <<<"$err"
done

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=(mpirun --oversubscribe -np 2 --mca btl self,vader)
err=$(timeout 120 "${MPIRUN[@]}" "$BIN" configs/train/debug_moe.toml --distributed.dp_shard=4 2>&1); rc=$?
check "layout mismatch under mpirun fails (no hang)" test "$rc" -ne 0 -a "$rc" -ne 124
check "one error line from rank 0 only" test "$(grep -c 'moe_train: error:' <<<"$err")" -eq 1
check "the line names the rank count" grep -q "= 4 ranks, but the job has 2" <<<"$err"

err=$(timeout 120 "${MPIRUN[@]}" "$BIN" configs/train/debug_moe.toml --dry-run --world-size=2 2>&1); rc=$?
check "dry-run under mpirun exits 0" test "$rc" -eq 0

# Training on 2 ranks (ep = 2) logs the losses of one process with twice the
# gradient accumulation (the same global batch); only rank 0 writes the JSONL.
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
export MOE_TRAIN_CACHE="$tmp/cache"
SMALL=(--model.dim=64 --model.n_layers=2 --model.max_seq_len=32 --train.seq_len=32 --train.batch_size=2
       --train.max_steps=3 --metrics.log_interval=1 --checkpoint.resume=never)
timeout 300 "${MPIRUN[@]}" "$BIN" configs/train/debug_moe.toml "${SMALL[@]}" --distributed.ep=2 \
  --checkpoint.dir="$tmp/ckpt_ranks" \
  --metrics.jsonl_path="$tmp/ranks.jsonl" >"$tmp/ranks.log" 2>&1; rc=$?
check "2-rank training exits 0" test "$rc" -eq 0
timeout 300 "$BIN" configs/train/debug_moe.toml "${SMALL[@]}" --train.grad_accum_steps=2 --checkpoint.dir="$tmp/ckpt_one" \
  --metrics.jsonl_path="$tmp/one.jsonl" >"$tmp/one.log" 2>&1; rc=$?
check "1-rank training exits 0" test "$rc" -eq 0
losses() { grep -o '"train/loss":[^,}]*' "$1" | cut -d: -f2; }
check "3 steps logged once (rank 0 only)" test "$(losses "$tmp/ranks.jsonl" | wc -l)" -eq 3
check "2 ranks match 1 process to 1e-5" awk 'NR == FNR { want[FNR] = $1; next }
  { d = $1 - want[FNR]; if (d < 0) d = -d; if (d > 1e-5 * want[FNR]) bad = 1; n++ }
  END { exit (bad || n != 3) }' <(losses "$tmp/one.jsonl") <(losses "$tmp/ranks.jsonl")
check "the 2-rank run saved its last step" test -f "$tmp/ckpt_ranks/step_3/metadata.json"
check "latest points at it" grep -qx step_3 "$tmp/ckpt_ranks/latest"

# Preemption: SIGUSR1 (what `#SBATCH --signal=USR1@120` sends) to both ranks
# mid-run: they finish the step, save together, and exit 75 (requeue).
rm -f "$tmp/pre.jsonl"
timeout 300 "${MPIRUN[@]}" "$BIN" configs/train/debug_moe.toml "${SMALL[@]}" --distributed.ep=2 \
  --train.max_steps=100000 --checkpoint.interval=100000 --checkpoint.dir="$tmp/ckpt_pre" \
  --metrics.jsonl_path="$tmp/pre.jsonl" >"$tmp/pre.log" 2>&1 &
launcher=$!
for _ in $(seq 600); do [ -s "$tmp/pre.jsonl" ] && break; sleep 0.1; done
# mpirun forwards SIGUSR1 to every rank (as srun does under Slurm).
kill -USR1 "$(pgrep -P "$launcher" -x mpirun)"
wait "$launcher"; rc=$?
check "preempted run exits 75 (requeue)" test "$rc" -eq 75
latest=$(cat "$tmp/ckpt_pre/latest" 2>/dev/null)
check "preempted run saved a checkpoint" test -n "$latest" -a -f "$tmp/ckpt_pre/$latest/metadata.json"

# A data error that only rank 0 sees (it alone scans the tokens for their
# entropy) ends every rank at once with exit 2, instead of leaving rank 1 in a
# collective until nccl_timeout_sec: one 'a' document whose end-of-document
# token (256) is outside a vocabulary of 120.
head -c 3000 /dev/zero | tr '\0' a >"$tmp/a.txt"
"$BIN" prepare --output="$tmp/bad_ids" --val-fraction=0 "$tmp/a.txt" >/dev/null 2>&1
start=$SECONDS
err=$(timeout 120 "${MPIRUN[@]}" "$BIN" configs/train/debug_moe.toml --train.device=cpu --data.dataset_path="$tmp/bad_ids/train" \
  --model.vocab_size=120 --distributed.dp_shard=2 --train.batch_size=1 --train.seq_len=32 --model.max_seq_len=32 \
  --model.dim=32 --model.n_layers=2 --train.max_steps=60 --checkpoint.dir="$tmp/ckpt_bad_ids" 2>&1 >/dev/null); rc=$?
check "a data error on rank 0 alone: the job exits 2" test "$rc" -eq 2
check "within 30 s (no wait for the collective timeout)" test $((SECONDS - start)) -lt 30
check "naming the rank, the file and the id" grep -q "moe_train: error: rank 0: data file .*tokens.npy: .* has id 256, outside the vocabulary" <<<"$err"


# A user error on one rank only, before training (its data path is missing
# on its node: mpirun's MPMD form gives rank 1 another path): every rank ends
# within 30 s with exit 2 and rank 1's line, not at the collective timeout.
# The same error on every rank: one line, from rank 0.
A=(configs/train/debug_moe.toml --train.device=cpu --model.dim=32 --model.n_layers=2 --train.batch_size=2
   --train.seq_len=32 --model.max_seq_len=32 --train.max_steps=50 --distributed.dp_shard=2
   --checkpoint.dir="$tmp/ckpt_one_rank")
"$BIN" prepare --output="$tmp/one_rank" --val-fraction=0 "$tmp/a.txt" >/dev/null 2>&1
start=$SECONDS
err=$(timeout 120 mpirun --oversubscribe --mca btl self,vader -np 1 "$BIN" "${A[@]}" --data.dataset_path="$tmp/one_rank/train" \
      : -np 1 "$BIN" "${A[@]}" --data.dataset_path="$tmp/not_on_this_node" 2>&1 >/dev/null); rc=$?
check "an error on rank 1 alone: exit 2 within 30 s" bash -c '[ "$0" -eq 2 ] && [ "$1" -lt 30 ]' "$rc" $((SECONDS - start))
check "an error on rank 1 alone: its one line" \
  bash -c '[ "$(grep -c "moe_train: error:" <<<"$0")" -eq 1 ] &&
           grep -q "moe_train: error: rank 1: data.dataset_path = $1/not_on_this_node: does not exist" <<<"$0"' "$err" "$tmp"
start=$SECONDS
err=$(timeout 120 "${MPIRUN[@]}" "$BIN" "${A[@]}" --data.dataset_path="$tmp/nowhere" 2>&1 >/dev/null); rc=$?
check "the same error on every rank: exit 2 at once, one line from rank 0" \
  bash -c '[ "$1" -eq 2 ] && [ "$2" -lt 8 ] && [ "$(grep -c "moe_train: error:" <<<"$0")" -eq 1 ] &&
           grep -q "^moe_train: error: data.dataset_path = .*/nowhere: does not exist" <<<"$0"' "$err" "$rc" $((SECONDS - start))

# Ctrl-C on a single process: the first saves a checkpoint and exits 75.
"$BIN" configs/train/debug_moe.toml --train.device=cpu --model.dim=32 --model.n_layers=2 --train.batch_size=2 \
  --train.seq_len=32 --model.max_seq_len=32 --train.max_steps=100000 --checkpoint.interval=100000 \
  --checkpoint.dir="$tmp/ckpt_int" --metrics.jsonl_path="$tmp/int.jsonl" --metrics.log_interval=1 >"$tmp/int.log" 2>&1 &
pid=$!
for _ in $(seq 600); do [ -s "$tmp/int.jsonl" ] && break; sleep 0.1; done
kill -INT "$pid"
wait "$pid"; rc=$?
check "Ctrl-C on one process exits 75" test "$rc" -eq 75
latest=$(cat "$tmp/ckpt_int/latest" 2>/dev/null)
check "Ctrl-C on one process saved a checkpoint" test -n "$latest" -a -f "$tmp/ckpt_int/$latest/metadata.json"

# A second Ctrl-C, 2 s or more after the first, ends the process at once
# (exit 130) instead of waiting for the step to finish and the save: steps of
# several seconds (8000 micro-batches each).
"$BIN" configs/train/debug_moe.toml --train.device=cpu --model.dim=32 --model.n_layers=2 --train.batch_size=2 \
  --train.seq_len=32 --model.max_seq_len=32 --train.max_steps=100 --train.grad_accum_steps=8000 \
  --checkpoint.interval=100000 --checkpoint.dir="$tmp/ckpt_int2" --metrics.jsonl_path="$tmp/int2.jsonl" \
  --metrics.log_interval=1 >"$tmp/int2.log" 2>&1 &
pid=$!
for _ in $(seq 1200); do [ -s "$tmp/int2.jsonl" ] && break; sleep 0.1; done
kill -INT "$pid"
sleep 2.5
kill -INT "$pid"
start=$SECONDS
wait "$pid"; rc=$?
check "a second Ctrl-C: exit 130 at once, not after the step" bash -c '[ "$0" -eq 130 ] && [ "$1" -le 1 ]' "$rc" $((SECONDS - start))

# SIGTERM to a job launched by the scripts (real mpirun, two ranks, outside
# Slurm), or Ctrl-C in its terminal (SIGINT to the foreground process group):
# the ranks save a checkpoint together and the job exits 75.
for sig in TERM INT; do
  rm -rf "$tmp/ckpt_sig" "$tmp/sig.jsonl"
  set -m  # the script in a process group of its own, with SIGINT not ignored, as in a terminal
  NPROCS=2 MOE_TRAIN_BIN="$BIN" MPIRUN_ARGS="--allow-run-as-root --mca btl self,vader" \
    scripts/slurm/singlenode.sh configs/train/debug_moe.toml --train.device=cpu --model.dim=32 \
    --model.n_layers=2 --train.batch_size=2 --train.seq_len=32 --model.max_seq_len=32 --train.max_steps=100000 \
    --checkpoint.interval=100000 --distributed.dp_shard=2 --checkpoint.dir="$tmp/ckpt_sig" \
    --metrics.jsonl_path="$tmp/sig.jsonl" --metrics.log_interval=1 >"$tmp/sig.log" 2>&1 &
  script=$!
  set +m
  for _ in $(seq 600); do [ -s "$tmp/sig.jsonl" ] && break; sleep 0.1; done
  if [ "$sig" = INT ]; then kill -INT -- "-$script"; else kill -TERM "$script"; fi
  wait "$script"; rc=$?
  check "$sig to the launched job: exit 75" test "$rc" -eq 75
  latest=$(cat "$tmp/ckpt_sig/latest" 2>/dev/null)
  check "$sig to the launched job: both ranks saved a checkpoint" \
    bash -c '[ -n "$1" ] && [ -f "$0/$1/rank_00000.safetensors" ] && [ -f "$0/$1/rank_00001.safetensors" ]' "$tmp/ckpt_sig" "$latest"
done

# A token file truncated or rewritten in place while a run reads it (a
# tokenizer run again on the same path): exit 2 naming the file, after saving
# the last finished step, never a SIGBUS. On one process, then on two ranks.
seq 1 100000 >"$tmp/numbers.txt"
for change in truncate rewrite mpirun-truncate; do
  rm -rf "$tmp/changing" "$tmp/ckpt_chg" "$tmp/chg.jsonl"
  "$BIN" prepare --output="$tmp/changing" --val-fraction=0 "$tmp/numbers.txt" >/dev/null 2>&1
  file=$(ls "$tmp"/changing/train/*.npy)
  launch=("$BIN"); ranks=()
  [ "$change" = mpirun-truncate ] && launch=("${MPIRUN[@]}" "$BIN") && ranks=(--distributed.dp_shard=2)
  timeout 120 "${launch[@]}" configs/train/debug_moe.toml --train.device=cpu --model.dim=32 --model.n_layers=2 \
    --train.batch_size=2 --train.seq_len=32 --model.max_seq_len=32 --train.max_steps=100000 \
    --checkpoint.interval=100000 --checkpoint.dir="$tmp/ckpt_chg" --data.dataset_path="$tmp/changing/train" \
    --metrics.jsonl_path="$tmp/chg.jsonl" --metrics.log_interval=1 "${ranks[@]}" >"$tmp/chg.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do [ "$(cat "$tmp/chg.jsonl" 2>/dev/null | wc -l)" -ge 3 ] && break; sleep 0.1; done
  start=$SECONDS
  case $change in
    *truncate) truncate -s 2000 "$file"; how="[0-9]* bytes when opened, 2000 now" ;;
    rewrite) sleep 0.01; dd if=/dev/urandom of="$file" bs=1 count=64 seek=4096 conv=notrunc 2>/dev/null
             how="rewritten since it was opened" ;;
  esac
  wait "$pid"; rc=$?
  check "$change under a run: exit 2 within 30 s" bash -c '[ "$0" -eq 2 ] && [ "$1" -lt 30 ]' "$rc" $((SECONDS - start))
  check "$change under a run: one line naming the file, what changed and what to do" \
    bash -c '[ "$(grep -c "changed while the run reads it" "$0")" -eq 1 ] &&
             grep -qE "moe_train: error: (rank 1: )?data file $1: changed while the run reads it \($2\).*resume from the last checkpoint; saved .*/step_[0-9]* \(the last finished step\)" "$0"' \
    "$tmp/chg.log" "$file" "$how"
  latest=$(cat "$tmp/ckpt_chg/latest" 2>/dev/null)
  check "$change under a run: the last finished step is saved" test -n "$latest" -a -f "$tmp/ckpt_chg/$latest/metadata.json"
  check "$change under a run: no SIGBUS, no crash" bash -c '! grep -qiE "bus error|core dumped|terminate called|signal" "$0"' "$tmp/chg.log"
done

# KempnerForge's W&B switch: accepted, with one warning that points to what works.
out=$("$BIN" configs/train/debug_moe.toml --train.device=cpu --model.dim=32 --model.n_layers=2 --train.seq_len=16 \
      --train.max_steps=1 --metrics.enable_wandb=true --metrics.wandb_project=kf --checkpoint.dir="$tmp/ckpt_wandb" 2>&1); rc=$?
check "enable_wandb = true: trains (exit 0)" test "$rc" -eq 0
check "enable_wandb = true: one warning naming JSONL and TensorBoard" \
  bash -c '[ "$(grep -c "Weights & Biases is not supported" <<<"$0")" -eq 1 ] && grep -q "JSONL file and, with metrics.enable_tensorboard = true, to TensorBoard" <<<"$0"' "$out"

exit $fail
