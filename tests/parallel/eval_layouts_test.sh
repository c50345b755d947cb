#!/usr/bin/env bash
# `moe_train eval` of one checkpoint under other layouts on 2 CPU ranks
# (tp 2, ep 2, dp_shard 2) prints the loss one process prints, with
# evaluation's own capacity too (ep 2): the weights are resharded on load, and
# the ranks share the same validation batches. And a dense model trained by a
# 2-stage pipeline evaluates to one loss in one process and in the pipeline.
set -u
BIN="$1"
source "$(dirname "${BASH_SOURCE[0]}")/../check.sh"  # check NAME CONDITION..., $fail
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=(timeout 300 mpirun --oversubscribe -np 2 --mca btl self,vader)
tmp="$TEST_TMPDIR/eval_layouts"
rm -rf "$tmp" && mkdir -p "$tmp"
for f in 0 1 2 3; do
  for i in $(seq 150); do echo "one checkpoint, any layout, the same loss $(( (i * (f + 2)) % 9 ))"; done > "$tmp/$f.txt"
done
"$BIN" prepare --output="$tmp/data" --val-fraction=0.25 "$tmp"/?.txt >/dev/null 2>&1
M=(configs/train/debug_moe.toml --train.device=cpu --model.dim=32 --model.n_layers=2 --model.ffn_hidden_dim=64
   --model.vocab_size=257 --train.seq_len=16 --train.batch_size=2 --data.dataset_path="$tmp/data/train"
   --eval.dataset_path="$tmp/data/val" --checkpoint.dir="$tmp/run" --distributed.dp_shard=1)
"$BIN" "${M[@]}" --train.max_steps=4 >/dev/null 2>&1
check "one process trains the checkpoint" test -d "$tmp/run/step_4"

loss() { grep -o "eval: loss [0-9.]*" <<<"$1" | cut -d' ' -f3; }
one=$(loss "$("$BIN" eval "${M[@]}" --eval.steps=2 2>/dev/null)")
check "one process evaluates it" test -n "$one"
# tp ranks read the same batches;
# dp_shard and ep ranks each read their own slice, so they take 1 step of 2.
for layout in "--distributed.tp=2 --eval.steps=2" "--distributed.ep=2 --eval.steps=1" \
              "--distributed.dp_shard=2 --eval.steps=1"; do
  # shellcheck disable=SC2086
  got=$(loss "$("${MPIRUN[@]}" "$BIN" eval "${M[@]}" $layout 2>/dev/null)")
  check "2 ranks, $layout: loss $got = one process's $one (1e-5)" \
    awk -v a="$got" -v b="$one" 'BEGIN { d = a - b; exit !(a != "" && d < 1e-5 && d > -1e-5) }'
done
# Evaluation's own capacity (moe_eval_capacity_factor) under expert
# parallelism: each rank caps its own micro-batch, as one process does.
C=(--model.moe_eval_capacity_factor=0.5)
one_capped=$(loss "$("$BIN" eval "${M[@]}" "${C[@]}" --eval.steps=2 2>/dev/null)")
check "a smaller evaluation capacity drops pairs: loss $one_capped, not $one" \
  awk -v a="$one_capped" -v b="$one" 'BEGIN { exit !(a != "" && a != b) }'
got=$(loss "$("${MPIRUN[@]}" "$BIN" eval "${M[@]}" "${C[@]}" --distributed.ep=2 --eval.steps=1 2>/dev/null)")
check "2 ranks, ep=2, evaluation capacity 0.5: loss $got = one process's $one_capped (1e-5)" \
  awk -v a="$got" -v b="$one_capped" 'BEGIN { d = a - b; exit !(a != "" && d < 1e-5 && d > -1e-5) }'

# A dense model trained by a 2-stage pipeline (the trainer's loop, its
# checkpoint saved by both stages): one process and the pipeline evaluate it
# to the same loss.
P=(configs/train/debug_dense.toml --train.device=cpu --model.dim=32 --model.n_layers=3 --model.ffn_hidden_dim=64
   --model.vocab_size=257 --train.seq_len=16 --train.batch_size=2 --train.grad_accum_steps=3
   --data.dataset_path="$tmp/data/train" --eval.dataset_path="$tmp/data/val" --checkpoint.dir="$tmp/piped")
"${MPIRUN[@]}" "$BIN" "${P[@]}" --distributed.pp=2 --train.max_steps=4 >"$tmp/piped.log" 2>&1
check "a 2-stage pipeline trains and saves the checkpoint" test -f "$tmp/piped/step_4/metadata.json"
check "its log names the pipeline" grep -q "pp=2, 1F1B over 3 micro-batches" "$tmp/piped.log"
one=$(loss "$("$BIN" eval "${P[@]}" --eval.steps=2 2>/dev/null)")
got=$(loss "$("${MPIRUN[@]}" "$BIN" eval "${P[@]}" --distributed.pp=2 --eval.steps=2 2>/dev/null)")
check "pp=2 evaluates the pipeline's checkpoint: loss $got = one process's $one (1e-5)" \
  awk -v a="$got" -v b="$one" 'BEGIN { d = a - b; exit !(a != "" && d < 1e-5 && d > -1e-5) }'
exit $fail
