#!/usr/bin/env bash
# The README's commands as a new user types them: the main job, then every
# `bazel run //:moe_train -- ...` line of the README in order, in a fresh copy
# of the workspace's configs and docs, with this build's binary for
# `bazel run //:moe_train --`. Each must exit 0; check-gpu may instead say that
# no GPU can be used here (exit 2), where none is.
set -u
BIN="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
README="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
source "$(dirname "${BASH_SOURCE[0]}")/check.sh"  # check NAME CONDITION..., $fail
ws="$TEST_TMPDIR/workspace"
rm -rf "$ws" && mkdir -p "$ws"
cp -r configs docs "$ws/"
cp "$README" "$ws/README.md"
cd "$ws" || exit 1

# The commands, in order: the main job's line first, then the others.
mapfile -t commands < <(grep -E '^(\./scripts/setup\.sh && )?bazel run //:moe_train -- ' README.md |
                          grep -v '^\./scripts/setup\.sh && \./scripts/test\.sh' |
                          sed -E 's|^\./scripts/setup\.sh && ||; s|[[:space:]]+#.*$||')
check "the README has the main job and at least 10 commands" test "${#commands[@]}" -ge 11
for command in "${commands[@]}"; do
  line="${command/bazel run \/\/:moe_train --/\"\$BIN\"}"
  start=$(date +%s)
  out=$(eval "$line" 2>&1); rc=$?
  took=$(( $(date +%s) - start ))
  if [[ $command == *" check-gpu "* ]] && [ "$rc" -eq 2 ] && grep -q "no GPU can be used here" <<<"$out"; then
    check "$command  (no GPU here: says so, exit 2; ${took}s)" true
    continue
  fi
  check "$command  (exit $rc, ${took}s)" test "$rc" -eq 0
  [ "$rc" -eq 0 ] || tail -5 <<<"$out"
done
check "the main job left its checkpoint and metrics" test -f checkpoints/debug_moe/step_100/metadata.json -a -s checkpoints/debug_moe/metrics.jsonl
check "plot drew its PNG" test -s checkpoints/debug_moe/metrics.png
check "TensorBoard events in tb_logs" bash -c 'ls tb_logs/events.out.tfevents.* >/dev/null'
check "the export has its config" test -s hf/debug/config.json
check "the docs became a dataset" test -d data/mytext/train
exit $fail
