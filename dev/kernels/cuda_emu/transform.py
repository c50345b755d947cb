#!/usr/bin/env python3
"""Rewrites a .cu of src/kernels/cuda/ so that g++ compiles it against cuda_emu.h:
CUDA and backend headers dropped (the emulator provides what they declare), the
kernels' own .cuh headers inlined,
dynamic shared memory read from emu_smem, <<<...>>> launches turned into
emu_launch(kernel, grid, block, smem, stream, args...).

    transform.py IN.cu OUT.cc
"""
import re
import sys

DROPPED = ("<cuda_bf16.h>", "<mma.h>", "<cuda_runtime.h>", '"src/kernels/cuda/cuda_check.h"',
           '"src/kernels/cuda/stream.h"')

def expand(path):
    """The file's lines, with the kernels' own .cuh headers inlined (they hold device code too)."""
    out = []
    for l in open(path).read().splitlines(keepends=True):
        if l.startswith("#include") and any(d in l for d in DROPPED) or l.startswith("#pragma once"):
            continue
        m = re.match(r'#include "(src/kernels/cuda/\w+\.cuh)"', l)
        out += expand(m.group(1)) if m else [l]
    return out


src = "".join(expand(sys.argv[1]))
src, n_smem = re.subn(r"extern __shared__ __align__\(\d+\) unsigned char (\w+)\[\];",
                      r"unsigned char* \1 = emu_smem;", src)
src, n_launch = re.subn(r"(\w+(?:<[^<>;]*>)?)<<<(.*?)>>>\(", r"emu_launch(\1, \2, ", src, flags=re.S)
if n_launch == 0:
    sys.exit("transform.py: no <<<...>>> launch found in " + sys.argv[1])
open(sys.argv[2], "w").write(src)
print(f"{sys.argv[2]}: {n_smem} shared-memory declarations, {n_launch} launches rewritten")
