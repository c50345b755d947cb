#!/usr/bin/env bash
# collective_timeout_test.sh BINARY: the job is aborted within seconds (not the
# 60 s rank 1 sleeps), non-zero, with one message naming rank, group and op.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
start=$(date +%s)
out=$(timeout 50 mpirun --oversubscribe -np 2 --mca btl self,vader "$1" 2>&1); rc=$?
took=$(( $(date +%s) - start ))
echo "$out"
fail=0
check() { if "${@:2}"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
check "job failed" test "$rc" -ne 0
check "not cut by the test's own timeout" test "$rc" -ne 124
check "aborted within 30 s (took ${took} s)" test "$took" -lt 30
check "message names rank, group and operation" grep -q "rank 0: dp_shard all_reduce did not finish within 2 s" <<<"$out"
check "never reached the end" test "$(grep -c 'not reached' <<<"$out")" -eq 0
exit $fail
