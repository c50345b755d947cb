#!/usr/bin/env bash
# Runs a test binary on CPU ranks: mpirun_test.sh NP BINARY [args...]
# Fails if any rank fails; a hang is cut by timeout (MPIRUN_TEST_TIMEOUT seconds, default 300).
set -u
np="$1"; shift
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
exec timeout "${MPIRUN_TEST_TIMEOUT:-300}" mpirun --oversubscribe -np "$np" --mca btl self,vader "$@"
