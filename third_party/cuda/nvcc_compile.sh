#!/usr/bin/env bash
# Compiles one .cu file with nvcc and records what each kernel uses per block
# (registers, static shared memory) for every architecture it is built for, as
# ptxas reports it (`--resource-usage`). The table feeds the launch check
# (src/kernels/cuda/launch_limits.h).
#   nvcc_compile.sh NVCC SRC OBJ TABLE "ARCHS" [nvcc flags...]
# ARCHS: compute capabilities, e.g. "80 90"; the object holds code for each and
# PTX for the newest, so that newer GPUs can compile it when they load it.
# OBJ "-": only the table (device code for each architecture, no object),
# for builds that do not link nvcc's objects (the CUDA emulator).
# TABLE rows: arch <TAB> SRC <TAB> mangled kernel name <TAB> registers <TAB> static shared bytes
set -euo pipefail
nvcc=$1 src=$2 obj=$3 table=$4 archs=$5
shift 5

log=$(mktemp)
trap 'rm -f "$log" "$log.cubin"' EXIT
status=0
if [ "$obj" = "-" ]; then
  for a in $archs; do
    "$nvcc" "$@" --resource-usage -cubin -gencode "arch=compute_$a,code=sm_$a" "$src" -o "$log.cubin" 2>>"$log" || status=$?
  done
else
  gencode=()
  newest=
  for a in $archs; do
    gencode+=(-gencode "arch=compute_$a,code=sm_$a")
    newest=$a
  done
  gencode+=(-gencode "arch=compute_$newest,code=compute_$newest")
  "$nvcc" "$@" --resource-usage "${gencode[@]}" -c "$src" -o "$obj" 2>"$log" || status=$?
fi
# Everything but ptxas's report goes on to the build's output (warnings, errors).
grep -v '^ptxas info\|^    [0-9]* bytes stack frame' "$log" >&2 || true
[ "$status" -eq 0 ] || exit "$status"

awk -v src="$src" '
  /Compiling entry function/ {
    n = split($0, q, "\x27")  # the name and the arch are the two quoted strings
    name = q[2]; arch = q[4]
    next
  }
  /Used [0-9]+ registers/ && name != "" {
    regs = $0; sub(/.*Used /, "", regs); sub(/ registers.*/, "", regs)
    smem = 0
    if (match($0, /[0-9]+ bytes smem/)) { smem = substr($0, RSTART, RLENGTH); sub(/ bytes smem/, "", smem) }
    printf "%s\t%s\t%s\t%s\t%s\n", arch, src, name, regs, smem
    name = ""
  }
' "$log" >"$table"
if [ ! -s "$table" ] && grep -q '__global__' "$src"; then
  echo "nvcc_compile.sh: $src defines kernels, but ptxas reported none (its --resource-usage output changed?)" >&2
  exit 1
fi
