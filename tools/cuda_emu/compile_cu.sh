#!/usr/bin/env bash
# Compiles one .cu file for the CUDA emulator: rewrites the two CUDA-only
# spellings into C++ and builds the result with the host compiler.
#   kernel<<<grid, block, shared, stream>>>(args)
#     -> ::emu::launch("kernel", __FILE__, __LINE__, kernel, grid, block, shared, stream)(args)
#   extern __shared__ [__align__(N)] T name[];
#     -> T* name = reinterpret_cast<T*>(::emu::dynamic_shared());
# Line numbers are kept (and #line names the .cu), so compiler errors and the
# emulator's launch errors point into the original source.
# Usage: compile_cu.sh SRC.cu OUT.o EMU_INCLUDE_DIR [extra compiler flags...]
set -euo pipefail
src=$1 out=$2 include=$3
shift 3
cc_file="${out%.o}.emu.cc"
{
  printf '#line 1 "%s"\n' "$src"
  perl -0pe '
    s/extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w:]+(?:\s+[\w:]+)*?)\s+(\w+)\s*\[\s*\]\s*;/$1* $2 = reinterpret_cast<$1*>(::emu::dynamic_shared());/g;
    s/([\w:]+(?:<[^<>;(){}]*>)?)\s*<<<(.*?)>>>\s*\(/::emu::launch("$1", __FILE__, __LINE__, $1, $2)(/gs;
  ' "$src"
} >"$cc_file"
if grep -n '<<<\|extern __shared__' "$cc_file" >&2; then
  echo "compile_cu.sh: $src: a launch or dynamic shared array the rewrite did not match (above)" >&2
  exit 1
fi
# The device contracts a * b + c into one fused multiply-add by default (nvcc
# --fmad=true); where the CPU has FMA, so does the emulated code.
fma=()
grep -qw fma /proc/cpuinfo 2>/dev/null && fma=(-mfma)
# Every load and store is checked for its type's alignment, as the device
# requires (a misaligned vector access faults there; x86 would accept it).
exec "${CXX:-g++}" -std=c++17 -O2 -g1 -fPIC "${fma[@]}" -fsanitize=alignment -fno-sanitize-recover=alignment -Wall -Wno-unknown-pragmas -Wno-sign-compare -I. -isystem "$include" \
  -DMOE_TRAIN_HAS_CUDA=1 -DMOE_TRAIN_CUDA_EMULATED=1 "$@" -x c++ -c "$cc_file" -o "$out"
