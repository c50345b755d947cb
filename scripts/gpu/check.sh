#!/usr/bin/env bash
# Runs the one-GPU checks of the CUDA backend on a machine with a GPU, from
# the repo root, with the binaries of scripts/gpu/bundle.sh
# (.gpu_bundle.tar.xz). Each phase is sized for about 10 minutes; logs go to
# ./gpu_logs, or to $OUT if it is set.
#   scripts/gpu/check.sh check-gpu  # moe_train check-gpu for debug_moe and bench_1b_moe
#   scripts/gpu/check.sh ops        # every op against the CPU reference
#   scripts/gpu/check.sh sanitize [NAME...]  # compute-sanitizer memcheck + racecheck on the op tests
#   scripts/gpu/check.sh train      # debug_moe 50 steps GPU vs CPU, memory, resume
#   scripts/gpu/check.sh bench      # step_bench: debug_moe and bench_1b_moe, with the op profile
#   scripts/gpu/check.sh quick      # check-gpu, ops, train and bench in one run (a few minutes; sanitize apart)
set -uo pipefail
cd "$(dirname "$0")/../.."
phase="${1:?usage: check.sh check-gpu|ops|sanitize|train|bench|quick}"
logs="${OUT:-gpu_logs}"
mkdir -p "$logs"
# tar's xz filter needs the xz tool; Python's tarfile (lzma) is the fallback.
[[ -d .gpu_bundle ]] || tar -xJf .gpu_bundle.tar.xz 2>/dev/null ||
  python3 -c 'import tarfile; tarfile.open(".gpu_bundle.tar.xz").extractall()' || { echo "no .gpu_bundle.tar.xz: build it with scripts/gpu/bundle.sh and copy it into this checkout" >&2; exit 2; }
bin=.gpu_bundle/bin
# CUDA's libraries: the toolkit's, else the ones pip installed with PyTorch.
cuda_libs=$(find /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib /opt /usr/lib/python3* /usr/local/lib/python3* \
              \( -name 'libcublasLt.so.13*' -o -name 'libnccl.so.2*' -o -name 'libcudart.so.13*' \) 2>/dev/null |
            xargs -r -n1 dirname | sort -u | paste -sd:)
export LD_LIBRARY_PATH="$PWD/.gpu_bundle/lib:${cuda_libs}:${LD_LIBRARY_PATH:-}"
nvidia-smi -L | tee "$logs/gpu.txt"
git log -1 --format='commit %h %s' 2>/dev/null | tee -a "$logs/gpu.txt"

op_tests=(op_table_gpu_test device_memory_gpu_test dense_ops_gpu_test gemm_gpu_test moe_ops_gpu_test attention_gpu_test)
status=0
run() {  # name, log file, command...
  local name=$1 log=$2
  shift 2
  local t0=$SECONDS
  "$@" >>"$log" 2>&1
  local rc=$?
  echo "$name: exit $rc in $((SECONDS - t0)) s" | tee -a "$logs/summary.txt"
  [[ $rc -eq 0 ]] || status=1
}
if [[ "$phase" == quick ]]; then
  status=0
  for p in check-gpu ops train bench; do "$0" "$p" || status=1; done
  exit $status
fi

case "$phase" in
  check-gpu)
    "$bin/moe_train" --version | tee -a "$logs/gpu.txt"
    for c in debug_moe bench_1b_moe; do
      run "moe_train check-gpu $c" "$logs/check_gpu.log" "$bin/moe_train" check-gpu "configs/train/$c.toml"
    done ;;
  ops)
    for t in "${op_tests[@]}"; do run "$t" "$logs/ops.log" "$bin/$t"; done ;;
  sanitize)
    # Under memcheck a test runs 10-100x slower: each gets its own time limit
    # (SANITIZE_LIMIT seconds, default 150), and `check.sh sanitize NAME...`
    # runs only the named tests, so the sanitizer runs can be split over several jobs.
    shift
    picked=("$@")
    [[ ${#picked[@]} -gt 0 ]] || picked=("${op_tests[@]}")
    for t in "${picked[@]}"; do
      run "memcheck $t" "$logs/sanitize.log" timeout "${SANITIZE_LIMIT:-150}" \
        compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 "$bin/$t"
    done
    for t in "${picked[@]}"; do
      case "$t" in op_table_gpu_test|moe_ops_gpu_test|attention_gpu_test|dense_ops_gpu_test) ;; *) continue ;; esac
      run "racecheck $t" "$logs/sanitize.log" timeout "${SANITIZE_LIMIT:-150}" \
        compute-sanitizer --tool racecheck --error-exitcode 9 "$bin/$t"
    done ;;
  train)
    run train_gpu_test "$logs/train.log" "$bin/train_gpu_test"
    run loss_curve_gpu_test "$logs/train.log" "$bin/loss_curve_gpu_test" ;;
  bench)
    # Graph replay (as training runs) for the figures; --profile (eager) for the op breakdown.
    for p in bf16 fp32; do
      run "step_bench debug_moe $p" "$logs/bench.log" "$bin/step_bench" configs/train/debug_moe.toml --device=cuda \
        --precision=$p --steps=20
    done
    run "step_bench debug_moe bf16 profile" "$logs/bench.log" "$bin/step_bench" configs/train/debug_moe.toml \
      --device=cuda --precision=bf16 --steps=10 --profile
    run "step_bench bench_1b_moe bf16" "$logs/bench.log" "$bin/step_bench" configs/train/bench_1b_moe.toml \
      --device=cuda --precision=bf16 --steps=10
    run "step_bench bench_1b_moe bf16 profile" "$logs/bench.log" "$bin/step_bench" configs/train/bench_1b_moe.toml \
      --device=cuda --precision=bf16 --steps=5 --profile ;;
  *) echo "unknown phase $phase" >&2; exit 2 ;;
esac
exit $status
