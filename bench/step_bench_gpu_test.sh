#!/usr/bin/env bash
# step_bench's GPU path on a small debug_moe: 3 steps replayed as CUDA graphs,
# then 2 eager steps with the op profile. Checks that both run and print their
# figures, the kernel of each op family and the profile's table; times are
# not checked.
# Usage: step_bench_gpu_test.sh STEP_BENCH CONFIG
set -euo pipefail
bench=$1 config=$2
small=(--model.dim=64 --model.max_seq_len=64 --train.seq_len=64 --train.batch_size=2)

out=$("$bench" "$config" --device=cuda --precision=bf16 --steps=3 "${small[@]}")
echo "$out"
grep -q 'CUDA graph' <<<"$out" || { echo "FAIL: not replayed as a CUDA graph on the GPU"; exit 1; }
grep -q 'tokens/s' <<<"$out" || { echo "FAIL: no tokens/s line"; exit 1; }
grep -q '^  kernel: attention B=2 T=64 ' <<<"$out" || { echo "FAIL: no line naming attention's kernel"; exit 1; }
grep -q '^  kernel: expert GEMMs E=' <<<"$out" || { echo "FAIL: no line naming the expert GEMMs' kernel"; exit 1; }

out=$("$bench" "$config" --device=cuda --precision=fp32 --steps=2 --profile "${small[@]}")
echo "$out"
for op in grouped_matmul_forward attention_backward adamw_step_many; do
  grep -q "^  $op " <<<"$out" || { echo "FAIL: $op missing from the profile"; exit 1; }
done
echo "PASS"
