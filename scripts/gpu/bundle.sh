#!/usr/bin/env bash
# Builds the GPU tests, the step benchmark and moe_train on a machine with
# Bazel and the CUDA toolkit (no GPU needed), and packs them for a GPU node
# that has the CUDA libraries but not Bazel or Debian's libraries: stripped
# binaries in .gpu_bundle/bin, the shared libraries they need that are neither
# glibc's nor CUDA's in .gpu_bundle/lib. CUDA's own (cudart, cuBLAS/cuBLASLt,
# NCCL) are large and are found on the GPU node by scripts/gpu/check.sh. The
# folder (~80 MiB) is packed into .gpu_bundle.tar.xz (about 9 MiB). Both are
# git-ignored; copy the .tar.xz into a checkout on the GPU node.
#   scripts/gpu/bundle.sh        then, on the GPU node: scripts/gpu/check.sh PHASE
set -euo pipefail
cd "$(dirname "$0")/../.."
bazel build //tests/gpu:all //tests/parallel:nccl_communicator_gpu_test //bench:step_bench //src:moe_train
out=.gpu_bundle
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
bins=(bazel-bin/tests/gpu/*_gpu_test bazel-bin/tests/parallel/nccl_communicator_gpu_test bazel-bin/bench/step_bench
      bazel-bin/src/moe_train)
for b in "${bins[@]}"; do
  [[ -f "$b" && -x "$b" ]] || continue
  cp "$b" "$out/bin/" && chmod u+w "$out/bin/$(basename "$b")" && strip "$out/bin/$(basename "$b")"
done
# Libraries to pack: everything ldd resolves outside glibc, the compiler's
# runtime and CUDA's folder.
for b in "$out"/bin/*; do ldd "$b"; done | awk '$3 ~ /^\// {print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) continue ;;
  esac
  [[ "$lib" == /usr/local/cuda* ]] && continue
  cp -L "$lib" "$out/lib/"
done
tar -cf - "$out" | xz -T2 -6 > "$out.tar.xz"
du -sh "$out/bin" "$out/lib" "$out.tar.xz"
