#!/usr/bin/env bash
# run_fuzzer.sh FUZZER SEEDS_DIR [SECONDS]: a short libFuzzer run (the CI
# smoke mode) from the committed seeds; fails on any crash or sanitizer report.
set -u
fuzzer="$1"; seeds="$2"; seconds="${3:-15}"
corpus="${TEST_TMPDIR:-$(mktemp -d)}/corpus"
mkdir -p "$corpus"
# A crashing input is kept with the test's outputs (bazel-testlogs/.../test.outputs).
artifacts="${TEST_UNDECLARED_OUTPUTS_DIR:-$corpus}/"
exec "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$artifacts" "$corpus" "$seeds"
