#!/usr/bin/env bash
# KempnerForge's 32-GPU MoE config (tp 4 x ep 2 x dp_shard 4, full activation
# checkpointing, bf16) trains on 32 CPU ranks with only its device and
# dataset path changed, shrunk by overrides: its losses fall, and they are
# the losses of the same run without checkpointing.
set -u
BIN="$1"
source "$(dirname "${BASH_SOURCE[0]}")/../check.sh"  # check NAME CONDITION..., $fail
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp="$TEST_TMPDIR/kempnerforge"
rm -rf "$tmp" && mkdir -p "$tmp/data"
# The config reads tokenized_*.bin: headerless uint16 ids, a pattern with some noise.
perl -e 'srand(7); print pack("v*", map { rand() < 0.8 ? ($_ * 7 + int($_ / 13)) % 256 : int(rand(256)) } 0 .. 99999)' \
  > "$tmp/data/tokenized_0.bin"
run() {  # run NAME [overrides...]: the step lines of a 4-step run
  local name="$1"; shift
  timeout 600 mpirun --oversubscribe -np 32 --mca btl self,vader "$BIN" configs/train/moe_ep_32gpu.toml \
    --train.device=cpu --data.dataset_path="$tmp/data" \
    --model.dim=64 --model.n_layers=2 --model.vocab_size=256 --model.max_seq_len=32 \
    --train.seq_len=32 --train.batch_size=2 --train.max_steps=4 --checkpoint.dir="$tmp/$name" "$@" \
    > "$tmp/$name.log" 2>&1
}
run full
check "trains on 32 ranks" test $? -eq 0
check "at the config's layout" grep -q "layout: 32 ranks (dp_replicate=1 dp_shard=4 ep=2 tp=4)" "$tmp/full.log"
check "with full activation checkpointing" grep -q "activation checkpointing: full" "$tmp/full.log"
check "and saves its checkpoint" test -f "$tmp/full/step_4/metadata.json"
losses() { grep -o "step [0-9]/4 | loss [0-9.]* | lr [0-9.e+-]* | grad_norm [0-9.]* | aux [0-9.]*" "$1"; }
first=$(losses "$tmp/full.log" | head -1 | cut -d' ' -f5)
last=$(losses "$tmp/full.log" | tail -1 | cut -d' ' -f5)
check "its loss falls ($first to $last)" awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }'
run none --train.activation_checkpointing=none
check "trains without checkpointing" test $? -eq 0
check "to the same losses, grad norms and aux losses" diff <(losses "$tmp/none.log") <(losses "$tmp/full.log")
check "four steps logged" test "$(losses "$tmp/full.log" | wc -l)" -eq 4
exit "$fail"
