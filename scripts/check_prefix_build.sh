#!/usr/bin/env bash
# Proves that the build finds every library through its *_HOME variable (or
# MOE_TRAIN_PREFIX), with nothing taken from Debian's folders: as a cluster
# user with modules would build. Needs root (mount namespaces) on a Debian
# machine set up by scripts/setup.sh. Run by hand; about 15 minutes on two cores.
#
#   scripts/check_prefix_build.sh [WORK_DIR] [bazel test arguments...]
#
# In WORK_DIR (default /tmp/moe_train_prefix_check):
#   mpi/, openblas/  copies of Debian's Open MPI and OpenBLAS (headers and
#                    shared libraries), as a module would provide them;
#   deps/            scripts/setup.sh --prefix=deps, run with Debian's
#                    header-only packages hidden, so it fetches toml++,
#                    nlohmann/json, Catch2, spdlog and fmt itself;
#   output_base/     Bazel's, apart from the normal build's.
# Then, in a mount namespace where Debian's copies of all seven libraries are
# hidden (empty folders and files mounted over them), it runs
# `bazel run //third_party:found` and `bazel test //...` with MPI_HOME,
# OPENBLAS_HOME and MOE_TRAIN_PREFIX set, and LD_LIBRARY_PATH as a module sets
# it. The CUDA toolkit stays where it is (CUDA_HOME). Exits with the test's code.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=$(realpath -m "${1:-/tmp/moe_train_prefix_check}")
shift || true

[[ $(id -u) -eq 0 ]] && unshare -m true 2>/dev/null ||
  { echo "check_prefix_build.sh: error: needs root and mount namespaces (unshare -m)" >&2; exit 2; }
multiarch=/usr/lib/x86_64-linux-gnu
[[ -f $multiarch/openmpi/include/mpi.h && -f /usr/include/x86_64-linux-gnu/cblas.h ]] ||
  { echo "check_prefix_build.sh: error: Debian's Open MPI and OpenBLAS are needed to copy from; run scripts/setup.sh" >&2; exit 2; }

# --- the "module" prefixes: copies of Debian's MPI and BLAS ----------------------
mkdir -p "$work/mpi/lib" "$work/openblas/include" "$work/openblas/lib"
cp -a "$multiarch/openmpi/include" "$work/mpi/"
cp -L "$multiarch"/libmpi.so.40 "$work/mpi/lib/"
ln -sf libmpi.so.40 "$work/mpi/lib/libmpi.so"
for h in cblas.h openblas_config.h f77blas.h; do cp -L "/usr/include/x86_64-linux-gnu/$h" "$work/openblas/include/"; done
cp -L "$multiarch/libopenblas.so.0" "$work/openblas/lib/"
ln -sf libopenblas.so.0 "$work/openblas/lib/libopenblas.so"

# --- what is hidden: Debian's headers and the libraries' files ----------------------
hidden_dirs=(/usr/include/spdlog /usr/include/fmt /usr/include/toml++ /usr/include/nlohmann /usr/include/catch2
  "$multiarch/openmpi/include")
hidden_files=(/usr/include/x86_64-linux-gnu/cblas.h /usr/include/x86_64-linux-gnu/openblas_config.h
  /usr/include/x86_64-linux-gnu/f77blas.h /usr/bin/mpicc)
for f in "$multiarch"/libspdlog.so* "$multiarch"/libfmt.so* "$multiarch"/libmpi.so* "$multiarch"/libopenblas.so* \
  "$multiarch"/openblas-pthread/libopenblas* "$multiarch"/openmpi/lib/libmpi.so*; do
  [[ -e $f ]] && hidden_files+=("$(realpath "$f")" "$f")
done

cat >"$work/inside.sh" <<'INNER'
set -euo pipefail
work=$1
shift
IFS=$'\n' read -r -d '' -a dirs <"$work/hidden_dirs" || true
IFS=$'\n' read -r -d '' -a files <"$work/hidden_files" || true
for d in "${dirs[@]}"; do mount -t tmpfs tmpfs "$d"; done
for f in "${files[@]}"; do [[ -e $f ]] && mount --bind /dev/null "$f"; done
echo "check_prefix_build.sh: hidden: ${#dirs[@]} folders, ${#files[@]} files of Debian's packages"

bazel="bazel --output_base=$work/output_base"
# Before the install: a missing library stops the build in one line that names
# it and the variable to set.
if out=$(env -u MOE_TRAIN_PREFIX $bazel build //third_party:catch2 2>&1); then
  echo "check_prefix_build.sh: FAIL: //third_party:catch2 built with Catch2 hidden" >&2
  exit 1
fi
if ! line=$(grep -o "catch2 not found (looked in .*): install catch2, or set CATCH2_HOME to the prefix that holds include/catch2/catch.hpp" <<<"$out"); then
  echo "$out" >&2
  echo "check_prefix_build.sh: FAIL: no one-line reason for the missing Catch2" >&2
  exit 1
fi
echo "check_prefix_build.sh: a missing library is named: $line"

# What `module load openmpi openblas` would set.
export MPI_HOME=$work/mpi OPENBLAS_HOME=$work/openblas
export LD_LIBRARY_PATH=$work/mpi/lib:$work/openblas/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# A user-space install, with nothing to find on the system.
rm -rf "$work/deps"
env -u MOE_TRAIN_PREFIX scripts/setup.sh --prefix="$work/deps"
# shellcheck disable=SC1091
source "$work/deps/env.sh"

$bazel run //third_party:found | tee "$work/found.txt"
$bazel test "$@" //...  # .bazelrc passes LD_LIBRARY_PATH to the tests
INNER
printf '%s\n' "${hidden_dirs[@]}" >"$work/hidden_dirs"
printf '%s\n' "${hidden_files[@]}" >"$work/hidden_files"
rc=0
unshare -m bash "$work/inside.sh" "$work" "$@" || rc=$?
# The Bazel server started inside the namespace would keep its mounts: stop it.
bazel --output_base="$work/output_base" shutdown 2>/dev/null || true
echo "check_prefix_build.sh: exit $rc"
exit "$rc"
