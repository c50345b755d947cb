# shellcheck shell=bash
# The one-line checks of the shell tests (sourced): `check NAME CONDITION...`
# runs CONDITION and prints "ok   NAME" or "FAIL NAME"; a test ends with
# `exit $fail`, which is 1 after any failure.
fail=0
check() {
  local name="$1"; shift
  if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fail=1; fi
}
