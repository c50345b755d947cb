#!/usr/bin/env bash
# The binary where the CUDA libraries are absent (a login node, a laptop): it
# needs none of them to start (cudart is linked statically; cuBLASLt and NCCL
# are opened when CUDA is asked for). With the toolkit's library folder hidden
# (an empty mount over it, in a mount namespace): --help, --version,
# --dry-run, prepare and CPU training work, and asking for CUDA exits 2 with
# one line naming the missing library and the fix.
#   no_cuda_libraries_test.sh MOE_TRAIN CUDA_LIBDIR
set -u
BIN=$(readlink -f "$1")
LIBDIR=$(readlink -f "$2")
source "$(dirname "${BASH_SOURCE[0]}")/check.sh"  # check NAME CONDITION..., $fail
needed=$(readelf -d "$BIN" | grep NEEDED)
check "no CUDA library among the binary's NEEDED entries" bash -c '! grep -qE "libcuda|libcublas|libnccl|libcudnn" <<<"$0"' "$needed"
check "no RUNPATH into the toolkit" bash -c '! readelf -d "$0" | grep -E "RPATH|RUNPATH" | grep -q cuda' "$BIN"
check "relocatable: the only RUNPATH is \$ORIGIN/../lib" \
  bash -c '[[ $(readelf -d "$0" | grep -E "\((RPATH|RUNPATH)\)" | sed "s/.*\[\(.*\)\]/\1/") == "\$ORIGIN/../lib" ]]' "$BIN"

if [[ $(id -u) -ne 0 ]] || ! unshare -m true 2>/dev/null; then
  echo "SKIP the hidden-library runs: they need root and mount namespaces (unshare -m)"
  exit $fail
fi
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
mkdir -p "$tmp/text"
printf 'The quick brown fox jumps over the lazy dog.\n%.0s' {1..200} >"$tmp/text/a.txt"
# Everything below runs with the toolkit's libraries hidden.
cat >"$tmp/hidden.sh" <<'INNER'
set -u
BIN=$1 LIBDIR=$2 tmp=$3
mount -t tmpfs tmpfs "$LIBDIR" || exit 99
export MOE_TRAIN_CACHE="$tmp/cache"
run() { local name=$1; shift; "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"; echo $? >"$tmp/$name.rc"; }
run lib_count bash -c "ls -A '$LIBDIR' | wc -l"
run help "$BIN" --help
run version "$BIN" --version
run dry_run "$BIN" configs/train/debug_moe.toml --dry-run
run prepare "$BIN" prepare --output="$tmp/data" "$tmp/text/a.txt"
run train "$BIN" configs/train/debug_moe.toml --train.device=cpu --model.dim=64 --train.seq_len=64 \
  --model.max_seq_len=64 --train.batch_size=2 --train.max_steps=2 --checkpoint.dir="$tmp/ck" \
  --data.dataset_path="$tmp/data/train"
run cuda "$BIN" configs/train/debug_moe.toml --train.device=cuda
run check_gpu "$BIN" check-gpu
INNER
unshare -m bash "$tmp/hidden.sh" "$BIN" "$LIBDIR" "$tmp"
check "the library folder is hidden" test "$(cat "$tmp/lib_count.out")" = 0
for step in help version dry_run prepare train; do
  check "$step works without the CUDA libraries" test "$(cat "$tmp/$step.rc")" -eq 0
done
check "--help prints the usage" grep -q "usage: moe_train" "$tmp/help.out"
check "--version says they are not found" grep -q "^cublas_found none" "$tmp/version.out"
check "--version says cuDNN is not found either" grep -q "^cudnn_found none" "$tmp/version.out"
check "--version names the MPI library it loaded, and its file" grep -q "^mpi_found .* (/.*libmpi[^ ]*)$" "$tmp/version.out"
check "--version names the BLAS library it loaded, and its file" grep -q "^blas_found .* (/.*blas[^ ]*)$" "$tmp/version.out"
check "--dry-run prints the plan" grep -q "active per token" "$tmp/dry_run.out"
check "CPU training runs its steps" grep -q "step 2/2 | loss" "$tmp/train.out" "$tmp/train.err"
for step in cuda check_gpu; do
  check "$step: exits 2" test "$(cat "$tmp/$step.rc")" -eq 2
  check "$step: one line" test "$(wc -l <"$tmp/$step.err")" -eq 1
  check "$step: names the library and the fix" \
    bash -c 'grep -q "libcublasLt.so.[0-9]* not found (looked for .*): install the CUDA .* set CUDA_HOME" "$0"' "$tmp/$step.err"
done
exit $fail
