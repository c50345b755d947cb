#!/usr/bin/env bash
# The checkpoint folder through the real binary, as a user fills it:
# - a run that would start over beside another run's checkpoints
#   (checkpoint.resume = "never") is refused, and deletes nothing;
# - a missing or empty `latest` resumes from the newest complete checkpoint,
#   and says so;
# - rotation removes only its own run's complete step_<N> folders: a
#   step_2_backup/, a step_-5/ or any other folder keeps its files, and an
#   interrupted deletion's leftover (step_<N>.deleting) is cleaned up;
# - a second run on a folder in use is refused with one line naming the
#   holder, and the lock goes with the process that held it;
# - resume is strict: a checkpoint of another model (fewer layers, tied
#   embeddings, another router) is refused, and nothing is deleted;
# - a run that diverges (optimizer.lr far too high) after a healthy start
#   stops with exit 3 naming the newest healthy checkpoint, which rotation
#   kept, and a resume with a sane lr continues from it and trains normally;
# - loading a subset is explicit: checkpoint.initial_load_path starts a new
#   run from the weights a checkpoint shares with the model, and says which
#   it did not share;
# - --archive-checkpoints moves a folder's checkpoints aside (nothing
#   deleted), after which a fresh start there is allowed.
set -u
BIN="$1"
source "$(dirname "${BASH_SOURCE[0]}")/check.sh"  # check NAME CONDITION..., $fail
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
export MOE_TRAIN_CACHE="$tmp/cache"
C=(configs/train/debug_moe.toml --train.device=cpu --model.dim=32 --model.n_layers=2 --train.batch_size=2
   --train.seq_len=32 --model.max_seq_len=32 --checkpoint.interval=1 --checkpoint.keep_last_n=2 --metrics.log_interval=1)

# --- a fresh start beside another run's checkpoints
R1="$tmp/R1"
"$BIN" "${C[@]}" --train.max_steps=4 --checkpoint.dir="$R1" >/dev/null 2>&1
check "run 1 keeps its newest 2" bash -c '[ -d "$0/step_3" ] && [ -d "$0/step_4" ] && [ ! -e "$0/step_2" ]' "$R1"
err=$("$BIN" "${C[@]}" --train.max_steps=2 --checkpoint.resume=never --checkpoint.dir="$R1" 2>&1 >/dev/null); rc=$?
check "resume = never beside them: exit 2" test "$rc" -eq 2
check "one error line" test "$(grep -c "moe_train: error:" <<<"$err")" -eq 1
check "naming the folder, its checkpoints and the fix" \
  grep -q "checkpoint.dir = \"$R1\" holds checkpoints of an earlier run (step_3, step_4).*another checkpoint.dir" <<<"$err"
check "nothing deleted, latest unchanged" \
  bash -c '[ -f "$0/step_3/metadata.json" ] && [ -f "$0/step_4/metadata.json" ] && [ "$(cat "$0/latest")" = step_4 ]' "$R1"

# --- a missing, then an empty `latest`: resume from the newest complete checkpoint, and say so
rm "$R1/latest"
log=$("$BIN" "${C[@]}" --train.max_steps=5 --checkpoint.dir="$R1" 2>&1); rc=$?
check "no latest: exit 0" test "$rc" -eq 0
check "no latest: says it resumes from the newest complete one" \
  grep -q "there is no $R1/latest: resuming from the newest complete checkpoint, $R1/step_4" <<<"$log"
check "no latest: resumed at step 4" grep -q "resumed from $R1/step_4 at step 4" <<<"$log"
: >"$R1/latest"
log=$("$BIN" "${C[@]}" --train.max_steps=6 --checkpoint.dir="$R1" 2>&1); rc=$?
check "empty latest: resumed from the newest (step 5), and says why" \
  bash -c '[ "$1" -eq 0 ] && grep -q "latest is empty: resuming from the newest complete checkpoint, .*/step_5" <<<"$0"' "$log" "$rc"
check "the continued run rotates its own lineage: step_5 and step_6 left" \
  bash -c '[ -d "$0/step_5" ] && [ -d "$0/step_6" ] && [ ! -e "$0/step_4" ] && [ "$(cat "$0/latest")" = step_6 ]' "$R1"

# --- resume is strict: the checkpoint and the model must have the same tensors
for other in "--model.n_layers=1|the checkpoint is of another model: has 31 tensor(s) this model does not (model.layers.1." \
             "--model.tie_embeddings=true|the checkpoint is of another model: has 3 tensor(s) this model does not (lm_head.weight, " \
             "--model.moe_router=sigmoid_topk|trained with model.moe_router = \"softmax_topk\", and this run has \"sigmoid_topk\""; do
  flag=${other%%|*} want=${other#*|}
  err=$("$BIN" "${C[@]}" "$flag" --train.max_steps=8 --checkpoint.dir="$R1" 2>&1 >/dev/null); rc=$?
  check "resume with $flag: exit 2" test "$rc" -eq 2
  check "resume with $flag: one error line naming the difference" \
    bash -c '[ "$(grep -c "moe_train: error:" <<<"$0")" -eq 1 ] && grep -qF "$1" <<<"$0"' "$err" "$want"
done
check "after the refusals: nothing deleted, latest unchanged" \
  bash -c '[ -f "$0/step_5/metadata.json" ] && [ -f "$0/step_6/metadata.json" ] && [ "$(cat "$0/latest")" = step_6 ]' "$R1"

# --- rotation touches only complete step_<digits> folders of its own run
R2="$tmp/R2"
mkdir -p "$R2/step_2_backup" "$R2/step_-5" "$R2/notes" "$R2/step_7" "$R2/step_8.deleting"
for d in step_2_backup step_-5 notes step_7; do echo "mine" >"$R2/$d/keep.txt"; done
"$BIN" "${C[@]}" --train.max_steps=4 --checkpoint.dir="$R2" >/dev/null 2>&1; rc=$?
check "a run beside foreign folders: exit 0" test "$rc" -eq 0
for d in step_2_backup step_-5 notes step_7; do
  check "$d/ and its file are kept" test "$(cat "$R2/$d/keep.txt" 2>/dev/null)" = mine
done
check "an interrupted deletion's leftover is cleaned up" test ! -e "$R2/step_8.deleting"
check "its own newest 2 are kept, the older deleted" \
  bash -c '[ -d "$0/step_3" ] && [ -d "$0/step_4" ] && [ ! -e "$0/step_1" ] && [ ! -e "$0/step_2" ]' "$R2"

# --- one run at a time
R3="$tmp/R3"
"$BIN" "${C[@]}" --train.max_steps=100000 --checkpoint.interval=1000000 --checkpoint.dir="$R3" >/dev/null 2>&1 &
holder=$!
for _ in $(seq 1 300); do grep -q "pid $holder" "$R3/.lock" 2>/dev/null && break; sleep 0.1; done
err=$("$BIN" "${C[@]}" --train.max_steps=2 --checkpoint.dir="$R3" 2>&1 >/dev/null); rc=$?
check "a second run on a folder in use: exit 2" test "$rc" -eq 2
check "one line naming the holder" \
  bash -c '[ "$(grep -c "moe_train: error:" <<<"$0")" -eq 1 ] && grep -q "is in use by another run (host .*, pid $1, since .*): .*another checkpoint.dir" <<<"$0"' "$err" "$holder"
kill -9 "$holder"; wait "$holder" 2>/dev/null
"$BIN" "${C[@]}" --train.max_steps=2 --checkpoint.dir="$R3" >/dev/null 2>&1; rc=$?
check "the lock goes with its process (killed): the next run trains" test "$rc" -eq 0
# --- divergence: the healthy checkpoint survives, and a sane resume continues from it
R4="$tmp/R4"
"$BIN" "${C[@]}" --train.max_steps=12 --checkpoint.dir="$R4" >/dev/null 2>&1
err=$("$BIN" "${C[@]}" --train.max_steps=40 --optimizer.lr=1000 --checkpoint.dir="$R4" 2>&1 >/dev/null); rc=$?
check "lr far too high: the run stops with exit 3" test "$rc" -eq 3
check "one error line naming the newest healthy checkpoint and how to go on" \
  bash -c '[ "$(grep -c "moe_train: error:" <<<"$0")" -eq 1 ] &&
           grep -q "the run has diverged; the newest healthy checkpoint is $1/step_12, .*lower optimizer.lr (now 1000)" <<<"$0"' \
  "$err" "$R4"
check "step_12 is kept and healthy, the diverged ones after it are unhealthy" \
  bash -c 'grep -q "\"health\": \"healthy\"" "$0/step_12/metadata.json" &&
           grep -q "\"health\": \"unhealthy\"" "$0/step_13/metadata.json" && [ ! -e "$0/step_10" ]' "$R4"
log=$("$BIN" "${C[@]}" --train.max_steps=20 --checkpoint.dir="$R4" --metrics.jsonl_path="$tmp/m4.jsonl" 2>&1); rc=$?
check "a resume with a sane lr: exit 0" test "$rc" -eq 0
check "it resumes from the newest healthy checkpoint, and says why" \
  bash -c 'grep -q "latest names step_[0-9]*, which is unhealthy (step [0-9]*: .*): resuming from the newest healthy checkpoint, $1/step_12" <<<"$0" &&
           grep -q "resumed from $1/step_12 at step 12" <<<"$0"' "$log" "$R4"
losses=$(grep -o '"train/loss":[^,]*' "$tmp/m4.jsonl" | cut -d: -f2)
check "it trains normally: 8 steps, every loss finite and below 7" \
  bash -c '[ "$(wc -l <<<"$0")" -eq 8 ] && awk "{ if (!(\$1 ~ /^[0-9.]+([eE][-+]?[0-9]+)?\$/ && \$1 + 0 < 7)) exit 1 }" <<<"$0"' "$losses"

# --- an explicit subset load: checkpoint.initial_load_path
R5="$tmp/R5"
log=$("$BIN" "${C[@]}" --model.n_layers=3 --train.max_steps=2 --checkpoint.initial_load_path="$R4" \
      --checkpoint.dir="$R5" 2>&1); rc=$?
check "initial_load_path into a deeper model: exit 0" test "$rc" -eq 0
check "it says which tensors keep their initial values, and starts a new run at step 1" \
  bash -c 'grep -q "initial_load_path: 9 tensor(s) of this model are not in $1/step_20 and keep their initial values (model.layers.2." <<<"$0" &&
           grep -q "initial weights from $1 (its step 20): a new run from step 1" <<<"$0" && ! grep -q "resumed from" <<<"$0"' \
  "$log" "$R4"
log=$("$BIN" "${C[@]}" --model.n_layers=1 --train.max_steps=1 --checkpoint.initial_load_path="$R4" \
      --checkpoint.dir="$tmp/R5b" 2>&1); rc=$?
check "initial_load_path into a shallower model: exit 0, naming the unused tensors" \
  bash -c '[ "$1" -eq 0 ] && grep -q "initial_load_path: 10 tensor(s) of .* are not in this model and are not used (model.layers.1." <<<"$0"' "$log" "$rc"
err=$("$BIN" "${C[@]}" --model.dim=64 --train.max_steps=1 --checkpoint.initial_load_path="$R4" \
      --checkpoint.dir="$tmp/R5c" 2>&1 >/dev/null); rc=$?
check "initial_load_path with other shapes: exit 2, one line naming the tensor" \
  bash -c '[ "$1" -eq 2 ] && [ "$(grep -c "moe_train: error:" <<<"$0")" -eq 1 ] &&
           grep -q "checkpoint.initial_load_path: tensor .* has shape" <<<"$0"' "$err" "$rc"

# --- --archive-checkpoints, then a fresh start in the same folder
out=$("$BIN" "${C[@]}" --checkpoint.dir="$R4" --archive-checkpoints 2>/dev/null); rc=$?
archived=$(ls -d "$R4"/archive/*/ 2>/dev/null | head -1)
check "--archive-checkpoints: exit 0, saying where they went" \
  bash -c '[ "$1" -eq 0 ] && grep -q "moved the checkpoints of $2 and its latest to $2/archive/" <<<"$0"' "$out" "$rc" "$R4"
check "--archive-checkpoints: moved, not deleted (latest and the step folders)" \
  bash -c '[ -f "$0/latest" ] && [ -f "$0/step_20/metadata.json" ] && [ -f "$0/step_19/metadata.json" ] &&
           [ -z "$(ls -d "$1"/step_* 2>/dev/null)" ] && [ ! -e "$1/latest" ]' "$archived" "$R4"
check "--archive-checkpoints: the run's metrics.jsonl goes with its checkpoints" \
  bash -c 'grep -q "\"step\":12," "$0/metrics.jsonl" && [ ! -e "$1/metrics.jsonl" ]' "$archived" "$R4"
"$BIN" "${C[@]}" --train.max_steps=2 --checkpoint.resume=never --checkpoint.dir="$R4" >/dev/null 2>&1; rc=$?
check "after archiving, a fresh start in the folder is allowed" \
  bash -c '[ "$0" -eq 0 ] && [ "$(cat "$1/latest")" = step_2 ] && [ -f "$2/step_20/metadata.json" ]' "$rc" "$R4" "$archived"
check "the fresh start's metrics.jsonl holds its own steps only" \
  bash -c '[ "$(grep -c "train/loss" "$0/metrics.jsonl")" -eq 2 ]' "$R4"

# --- auto-resume meets a checkpoint of another model: how to start afresh
err=$("$BIN" "${C[@]}" --model.num_experts 8 --train.max_steps=3 --checkpoint.dir "$R4" 2>&1 >/dev/null); rc=$?
check "another model's checkpoint found by auto-resume: exit 2, one line naming both ways to start afresh" \
  bash -c '[ "$1" -eq 2 ] && [ "$(grep -c "^moe_train: error" <<<"$0")" -eq 1 ] && grep -q "checkpoint.resume = \"auto\" found it" <<<"$0" &&
           grep -q -- "--checkpoint.dir=$2_2" <<<"$0" && grep -q -- "--archive-checkpoints" <<<"$0"' "$err" "$rc" "$R4"

exit $fail
