#!/usr/bin/env bash
# Prints where the build found each library it uses (one line each, written
# by third_party/system_library.bzl and cuda_configure.bzl when Bazel last
# looked). Run: bazel run //third_party:found
set -euo pipefail
cd "${RUNFILES_DIR:-$0.runfiles}"
for f in */found.txt; do cat "$f"; done
