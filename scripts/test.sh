#!/usr/bin/env bash
# The test command (README, CI): every test, then the GPU tests on the CUDA
# emulator (tools/cuda_emu), which runs the CUDA backend's real kernels on the
# CPU where there is no GPU. The emulated build has its own output base, so
# neither run rebuilds the other. Extra arguments go to both `bazel test` runs.
# Exits non-zero if either run fails.
set -uo pipefail
cd "$(dirname "$0")/.."

emu_output_base=${MOE_TRAIN_CUDA_EMU_OUTPUT_BASE:-$HOME/.cache/moe_train/cuda_emu_output_base}

echo "== bazel test //..."
bazel test "$@" //...
rc=$?

echo "== bazel test --config=cuda_emu (the GPU tests on the CUDA emulator)"
# Every top-level package tree but the first run's bazel-* links: they lead
# into its output base, whose packages this server would try to load (//...
# would follow them).
patterns=()
for d in */; do
  d=${d%/}
  [ -L "$d" ] && continue
  [ -n "$(find "$d" -name BUILD -print -quit)" ] && patterns+=("//$d/...")
done
bazel --output_base="$emu_output_base" test --config=cuda_emu --build_tests_only "$@" -- "${patterns[@]}"
emu_rc=$?

[ "$rc" -eq 0 ] && [ "$emu_rc" -eq 0 ]
