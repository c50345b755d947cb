#!/usr/bin/env bash
# `moe_train check-gpu` and the check a CUDA run makes before step 1, on the
# binary as a user runs it (on the CUDA emulator in CI):
# - every check passes on working GPUs: the table, one summary line per GPU,
#   exit 0; with two GPUs each is checked in its own process, then the NCCL
#   collectives across them (results exact, bus bandwidth printed);
# - a kernel that computes wrongly (CUDA_EMU_FAULT makes one skip a block)
#   fails it: exit 2, one error line naming the op;
# - a CUDA training run checks its GPU first and trains; the next run finds
#   the passed check in the cache and skips it; --skip-gpu-check skips it too;
# - the table and the training log name the kernel of each op family (on the
#   emulator: the builtin attention, since the build has no cuDNN path).
set -u
BIN="$1"
source "$(dirname "${BASH_SOURCE[0]}")/../check.sh"  # check NAME CONDITION..., $fail
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
export MOE_TRAIN_CACHE="$tmp/cache"
# debug_moe's structure at a size the emulator runs in seconds.
SMALL=(--model.dim=64 --model.max_seq_len=64 --train.seq_len=64 --train.batch_size=2)
emulated=0
[ -n "$("$BIN" --version | grep '^cuda_emulator yes')" ] && emulated=1

out=$(CUDA_EMU_DEVICE_COUNT=2 "$BIN" check-gpu configs/train/debug_moe.toml "${SMALL[@]}" 2>"$tmp/err"); rc=$?
check "check-gpu exits 0" test "$rc" -eq 0
check "the table has a header" grep -q "check .*shape .*dtype .*max error.*tolerance .*time .*result" <<<"$out"
for op in rmsnorm_forward attention_backward grouped_matmul_backward router_aux_losses moe_plan adamw_step_many \
          "CUDA graph replay vs eager" "training, 5 steps vs CPU"; do
  check "$op is checked and passes" grep -q "^  $op .* PASS$" <<<"$out"
done
check "fp32 and bf16 rows" bash -c 'grep -q " f32 .* PASS$" <<<"$0" && grep -q " bf16 .* PASS$" <<<"$0"' "$out"
check "no row fails" bash -c '! grep -q "FAIL$" <<<"$0"' "$out"
check "attention rows name the kernel that ran" grep -q "^      ran: " <<<"$out"
check "the table lists what runs each op family" bash -c 'grep -q "^    dense GEMMs: cuBLASLt" <<<"$0" && grep -q "^    attention B=2 T=32 H=4/2 Dh=16 bf16: " <<<"$0"' "$out"
if [ "$emulated" -eq 1 ]; then
  check "the emulator runs the builtin attention, and says why" \
    grep -q "^    attention B=2 T=32 H=4/2 Dh=16 bf16: builtin flash attention (WMMA) (this build has no cuDNN path" <<<"$out"
  check "and the builtin expert GEMMs, and says why" \
    grep -q "^    expert GEMMs E=4 I=64 O=64 bf16: builtin grouped GEMM (WMMA) (this build has no CUTLASS kernels" <<<"$out"
fi
check "a summary line per GPU" bash -c 'grep -q "^GPU 0 (.*): [0-9]* checks passed in" <<<"$0" && grep -q "^GPU 1 (.*): [0-9]* checks passed in" <<<"$0"' "$out"
for c in "all-reduce (sum)" "all-gather" "reduce-scatter (sum)" "all-to-all (send/recv)"; do
  check "NCCL $c across the 2 GPUs: exact" grep -q "^  nccl $c .* x 2 GPUs .* 0 exact .* PASS$" <<<"$out"
done
check "NCCL bus bandwidth is printed" grep -q "^      bus bandwidth [0-9.]* GB/s" <<<"$out"
check "the last line says all passed" test "$(tail -1 <<<"$out")" = "check-gpu: all 2 GPUs passed, and NCCL across them"

if [ "$emulated" -eq 1 ]; then
  out=$(CUDA_EMU_FAULT=rmsnorm_forward_kernel CUDA_EMU_DEVICE_COUNT=1 "$BIN" check-gpu configs/train/debug_moe.toml \
        "${SMALL[@]}" 2>"$tmp/err"); rc=$?
  err=$(cat "$tmp/err")
  check "a wrong kernel fails check-gpu with exit 2" test "$rc" -eq 2
  check "one error line" test "$(wc -l <<<"$err")" -eq 1
  check "the error names the GPU and the op" grep -q "check-gpu failed: GPU 0 .*FAILED rmsnorm_forward" <<<"$err"
  check "the table shows the failing row and why" grep -q "out\[0\] = 0, the CPU gives" <<<"$out"
fi

rm -rf "$MOE_TRAIN_CACHE"
TRAIN=(configs/train/debug_moe.toml --train.device=cuda "${SMALL[@]}" --train.max_steps=2 --checkpoint.interval=100)
log=$(CUDA_EMU_DEVICE_COUNT=1 "$BIN" "${TRAIN[@]}" --checkpoint.dir="$tmp/ck1" 2>&1); rc=$?
check "a CUDA run exits 0" test "$rc" -eq 0
check "it checks the GPU first" grep -q "checking GPU 0 (.*) before training" <<<"$log"
check "the check passes" grep -q "GPU 0 (.*): [0-9]* checks passed" <<<"$log"
check "then it trains" grep -q "step 2/2 | loss" <<<"$log"
log=$(CUDA_EMU_DEVICE_COUNT=1 "$BIN" "${TRAIN[@]}" --checkpoint.dir="$tmp/ck2" 2>&1); rc=$?
check "a second run exits 0" test "$rc" -eq 0
check "it finds the passed check in the cache" grep -q "passed its check before (.*gpu_check/.*): not checked again" <<<"$log"
check "and does not check again" bash -c '! grep -q "checking GPU" <<<"$0"' "$log"
rm -rf "$MOE_TRAIN_CACHE"
log=$(CUDA_EMU_DEVICE_COUNT=1 "$BIN" "${TRAIN[@]}" --checkpoint.dir="$tmp/ck3" --skip-gpu-check --train.kernels=builtin 2>&1); rc=$?
check "--skip-gpu-check trains without the check" bash -c '[ "$1" -eq 0 ] && ! grep -q "checking GPU\|passed its check" <<<"$0"' "$log" "$rc"
check "the log names each op's kernel; train.kernels = builtin forces ours" \
  bash -c 'grep -q "kernel: attention B=2 T=64 H=4/2 Dh=16 bf16: builtin flash attention (WMMA) (train.kernels = \"builtin\")" <<<"$0" &&
           grep -q "kernel: expert GEMMs E=4 I=64 O=[0-9]* bf16: builtin grouped GEMM (WMMA) (train.kernels = \"builtin\")" <<<"$0"' "$log"

if [ "$emulated" -eq 1 ]; then
  rm -rf "$MOE_TRAIN_CACHE"
  err=$(CUDA_EMU_FAULT=rmsnorm_forward_kernel CUDA_EMU_DEVICE_COUNT=1 "$BIN" "${TRAIN[@]}" --checkpoint.dir="$tmp/ck4" \
        2>&1 >/dev/null); rc=$?
  check "a failed check stops the run with exit 2" test "$rc" -eq 2
  check "naming the op and its error" grep -q "moe_train: error: GPU 0 (.*): FAILED rmsnorm_forward .*the CPU gives" <<<"$err"
  check "before any step" bash -c '! grep -q "step 1/2" <<<"$0"' "$err"
  check "nothing cached" test ! -d "$MOE_TRAIN_CACHE/gpu_check"
fi
exit $fail
