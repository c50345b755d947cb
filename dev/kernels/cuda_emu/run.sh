#!/usr/bin/env bash
# Runs src/kernels/cuda/attention.cu on the CPU through the emulator, against
# the CPU reference:  dev/kernels/cuda_emu/run.sh [tiny|quick|all] [schedule 0|1|2]
# (from the repository root; needs g++ and OpenBLAS; no GPU, no CUDA toolkit).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
out=${TMPDIR:-/tmp}/moe_cuda_emu
mkdir -p "$out"
python3 dev/kernels/cuda_emu/transform.py src/kernels/cuda/attention.cu "$out/attention_emu.cc"
g++ -std=c++17 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -I. \
  -include dev/kernels/cuda_emu/cuda_emu.h \
  "$out/attention_emu.cc" dev/kernels/cuda_emu/attention_emu_main.cc src/core/tensor.cc src/kernels/cpu/attention.cc \
  -lopenblas -o "$out/attention_emu"
ASAN_OPTIONS=detect_stack_use_after_return=0 "$out/attention_emu" "${1:-quick}" "${2:-0}"
