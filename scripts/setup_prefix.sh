#!/usr/bin/env bash
# User-space set-up, no root: `scripts/setup.sh --prefix=DIR` runs this.
#
# What the cluster provides (its modules, or the system) stays: the CUDA
# toolkit, MPI and BLAS are looked for exactly as the build looks for them
# (CUDA_HOME or nvcc on PATH; MPI_HOME or mpicc on PATH; OPENBLAS_HOME), and
# reported. What a user can fetch without root goes into DIR:
#   - the header-only libraries (toml++, nlohmann/json, Catch2, spdlog, fmt),
#     where the system lacks them: Debian 12's packages, pinned by SHA-256,
#     unpacked with ar and tar (no dpkg needed); spdlog and fmt are then used
#     header-only;
#   - Bazel, where none is on PATH: the pinned release binary, checked
#     against its SHA-256;
#   - the two NVIDIA header packages (scripts/fetch_vendor_headers.sh), in
#     DIR/vendor unless MOE_TRAIN_VENDOR_DIR says otherwise;
#   - the text of Debian's fortunes, the default training corpus, in
#     DIR/share/games/fortunes where /usr/share/games/fortunes is absent.
# It writes DIR/env.sh, which sets MOE_TRAIN_PREFIX, MOE_TRAIN_VENDOR_DIR and
# PATH for the build; source it (after `module load ...`) before `bazel`.
# It ends with one line per dependency still missing, naming what provides it,
# and exits 1 if any is; 0 when the build has everything.
#   scripts/setup_prefix.sh DIR
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "setup.sh --prefix: error: $*" >&2; exit 2; }
say() { echo "setup.sh --prefix: $*"; }

[[ $# -eq 1 && -n $1 ]] || die "usage: scripts/setup.sh --prefix=DIR"
mkdir -p "$1" || die "cannot create $1; choose a folder you can write to (for example \$HOME/moe_train_deps)"
prefix=$(cd "$1" && pwd)
[[ -w $prefix ]] || die "$prefix is not writable; choose a folder you can write to"

# The pinned Bazel release (the build files also work with Debian's Bazel 4.2.3).
BAZEL_VERSION=6.5.0
BAZEL_SHA256=a40ac69263440761199fcb8da47ad4e3f328cbe79ffbf4ecc14e5ba252857307
BAZEL_URL=https://github.com/bazelbuild/bazel/releases/download/$BAZEL_VERSION/bazel-$BAZEL_VERSION-linux-x86_64

# Header-only libraries: Debian 12 (bookworm) packages.
# name | header that proves it | *_HOME variable | pool path | SHA-256
DEBIAN=http://deb.debian.org/debian
HEADER_PACKAGES=(
  "toml++|toml++/toml.h|TOMLPLUSPLUS_HOME|pool/main/t/tomlplusplus/libtomlplusplus-dev_3.3.0+ds-1_amd64.deb|2779cce0001466dcf60eb6262ff68a888d49f9e30aee80c499d1d4f6f9f6e12e"
  "nlohmann/json|nlohmann/json.hpp|NLOHMANN_JSON_HOME|pool/main/n/nlohmann-json3/nlohmann-json3-dev_3.11.2-2_all.deb|ec57940def6b6186c30be0e0ee81d1e58f86d11a54a145b28686a1e3e4aae801"
  "Catch2|catch2/catch.hpp|CATCH2_HOME|pool/main/c/catch2/catch2_2.13.10-1_amd64.deb|0b32d3017609fecef1ecb0827729c2f3cda61332dd1f50da73ea9066fb4fc7ca"
  "spdlog|spdlog/spdlog.h|SPDLOG_HOME|pool/main/s/spdlog/libspdlog-dev_1.10.0+ds-0.4_amd64.deb|4e19d647fe9bc9ec6a1fae81be00a69b1796b41660e8a7a4cf567264b463dcfb"
  "fmt|fmt/format.h|FMT_HOME|pool/main/f/fmtlib/libfmt-dev_9.1.0+ds1-2_amd64.deb|c8fa00dd0269e6eda9fd06668df3d720de4b5a1f647dcd3c6e0ba63f0cbf2150"
)

missing=()

# A header in the places the build looks: $<VAR>_HOME, $<VAR>_ROOT, the
# prefixes in MOE_TRAIN_PREFIX, /usr/local and /usr (see third_party/system_library.bzl).
has_header() {  # HEADER VAR
  local header=$1 var=$2 p
  for p in "${!var:-}" "$(eval echo "\${${var%_HOME}_ROOT:-}")" ${MOE_TRAIN_PREFIX//:/ } /usr/local /usr; do
    [[ -n $p && -f $p/include/$header ]] && { echo "$p"; return 0; }
  done
  return 1
}

download() {  # URL FILE SHA256
  local url=$1 file=$2 sha=$3 got
  if command -v curl >/dev/null; then
    curl -fsSL --retry 2 -o "$file" "$url" || return 1
  elif command -v wget >/dev/null; then
    wget -q -O "$file" "$url" || return 1
  else
    die "neither curl nor wget is installed; one of them is needed to fetch $url"
  fi
  got=$(sha256sum "$file" | cut -d' ' -f1)
  [[ $got == "$sha" ]] || { rm -f "$file"; die "$(basename "$url"): SHA-256 $got, expected $sha; refusing an unpinned file"; }
}

# FOLDER (a path in the package, like ./usr/include) of the Debian package at
# POOL_PATH, pinned by SHA-256, unpacked into WORK with ar and tar (no dpkg).
# Returns 1 when the package cannot be downloaded.
unpack_debian_folder() {  # POOL_PATH SHA256 FOLDER WORK
  local path=$1 sha=$2 folder=$3 work=$4 deb
  command -v ar >/dev/null || die "ar (binutils) is needed to unpack Debian's $(basename "$path"); load or install binutils"
  deb="$work/$(basename "$path")"
  download "$DEBIAN/$path" "$deb" "$sha" || return 1
  (cd "$work" && ar x "$deb" && tar -xf data.tar.* "$folder" && rm -f "$deb" data.tar.* control.tar.* debian-binary) ||
    die "$(basename "$path"): could not unpack $folder from it"
}

# --- header-only libraries -------------------------------------------------------
export MOE_TRAIN_PREFIX="$prefix${MOE_TRAIN_PREFIX:+:$MOE_TRAIN_PREFIX}"
for entry in "${HEADER_PACKAGES[@]}"; do
  IFS='|' read -r name header var path sha <<<"$entry"
  if where=$(has_header "$header" "$var"); then
    say "$name: found in $where"
    continue
  fi
  work=$(mktemp -d)
  say "$name: fetching $(basename "$path")"
  # Only the headers: Debian's usr/include becomes DIR/include.
  if ! unpack_debian_folder "$path" "$sha" ./usr/include "$work"; then
    rm -rf "$work"
    missing+=("$name: could not download $DEBIAN/$path; put its headers under a prefix and set $var to it")
    continue
  fi
  mkdir -p "$prefix/include"
  cp -a "$work/usr/include/." "$prefix/include/"
  rm -rf "$work"
  has_header "$header" "$var" >/dev/null || die "$name: unpacked, but $prefix/include/$header is not there"
  say "$name: headers in $prefix/include"
done

# --- the default corpus: the text of Debian's fortunes ---------------------------------
# Training without data.dataset_path reads PREFIX/share/games/fortunes (the
# binary looks there through MOE_TRAIN_PREFIX) or /usr/share/games/fortunes.
FORTUNE_PACKAGES=(
  "pool/main/f/fortune-mod/fortunes-min_1.99.1-7.3_all.deb|9eed5b45064e41133dae0967cf3a17588ad77c014fcc7bf1527fa3ea48e44d07"
  "pool/main/f/fortune-mod/fortunes_1.99.1-7.3_all.deb|41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5"
)
if [[ -f /usr/share/games/fortunes/fortunes ]]; then
  say "fortunes: found in /usr/share/games/fortunes"
elif [[ -f $prefix/share/games/fortunes/fortunes ]]; then
  say "fortunes: found in $prefix/share/games/fortunes"
else
  work=$(mktemp -d)
  fetched=1  # both packages, or the corpus would differ from Debian's
  for entry in "${FORTUNE_PACKAGES[@]}"; do
    IFS='|' read -r path sha <<<"$entry"
    say "fortunes: fetching $(basename "$path")"
    unpack_debian_folder "$path" "$sha" ./usr/share/games/fortunes "$work" || fetched=0
  done
  if ((fetched)); then
    mkdir -p "$prefix/share/games"
    rm -rf "$prefix/share/games/fortunes"
    cp -a "$work/usr/share/games/fortunes" "$prefix/share/games/"
    say "fortunes: text in $prefix/share/games/fortunes"
  else
    missing+=("fortunes (the default training corpus): could not download it from $DEBIAN; set data.dataset_path to a prepared dataset instead")
  fi
  rm -rf "$work"
fi

# --- Bazel -----------------------------------------------------------------------------
if command -v bazel >/dev/null; then
  say "bazel: $(command -v bazel) ($(bazel --version 2>/dev/null | head -1))"
elif [[ -x $prefix/bin/bazel ]]; then
  say "bazel: $prefix/bin/bazel"
else
  mkdir -p "$prefix/bin"
  say "bazel: fetching Bazel $BAZEL_VERSION"
  if download "$BAZEL_URL" "$prefix/bin/bazel.part" "$BAZEL_SHA256"; then
    chmod +x "$prefix/bin/bazel.part"
    mv "$prefix/bin/bazel.part" "$prefix/bin/bazel"
  else
    rm -f "$prefix/bin/bazel.part"
    missing+=("bazel: could not download $BAZEL_URL; fetch it elsewhere (SHA-256 $BAZEL_SHA256) and put it in $prefix/bin/bazel, or load a bazel module")
  fi
fi

# --- the NVIDIA header packages --------------------------------------------------
export MOE_TRAIN_VENDOR_DIR=${MOE_TRAIN_VENDOR_DIR:-$prefix/vendor}
if ! "$here/fetch_vendor_headers.sh"; then
  missing+=("cudnn-frontend and cutlass headers: see the line above (they need python3 with pip, and the package index)")
fi

# --- what the cluster provides ---------------------------------------------------
cxx=${CXX:-g++}
if command -v "$cxx" >/dev/null && "$cxx" -std=c++17 -x c++ -fsyntax-only - <<<'#include <optional>' 2>/dev/null; then
  say "c++: $(command -v "$cxx") ($("$cxx" --version | head -1))"
else
  missing+=("a C++17 compiler: load a GCC module (gcc 9 or newer), or set CXX")
fi

if [[ -n ${MPI_HOME:-} && -f $MPI_HOME/include/mpi.h ]]; then
  say "mpi: \$MPI_HOME ($MPI_HOME)"
elif command -v mpicc >/dev/null; then
  say "mpi: $(command -v mpicc) ($( (mpicc --showme:version || mpicc -v | head -1) 2>/dev/null))"
elif [[ -f /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h ]]; then
  say "mpi: Debian's Open MPI"
else
  missing+=("MPI: load the cluster's MPI module (module load openmpi), or set MPI_HOME to a prefix with include/mpi.h and lib/libmpi.so")
fi

blas=""
for p in "${OPENBLAS_HOME:-}" "${OPENBLAS_ROOT:-}" ${MOE_TRAIN_PREFIX//:/ } /usr/local /usr; do
  [[ -n $p ]] || continue
  for inc in "$p/include" "$p/include/openblas" "$p/include/x86_64-linux-gnu"; do
    [[ -f $inc/cblas.h ]] && { blas=$inc; break 2; }
  done
done
if [[ -n $blas ]]; then
  say "blas: cblas.h in $blas"
else
  missing+=("OpenBLAS: load the cluster's OpenBLAS module, or set OPENBLAS_HOME to a prefix with include/cblas.h and lib/libopenblas.so")
fi

# Only the fuzz test (tests/fuzz) needs clang's libFuzzer; without it, the rest builds and tests.
if echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' |
  clang++ -x c++ -fsanitize=fuzzer - -o /dev/null 2>/dev/null; then
  say "clang++ with libFuzzer: $(command -v clang++) (for tests/fuzz)"
else
  say "clang++ with libFuzzer: not found; load a clang module for tests/fuzz, or test with: bazel test -- //... -//tests/fuzz/..."
fi

if [[ -n ${CUDA_HOME:-} ]]; then
  say "cuda: \$CUDA_HOME ($CUDA_HOME)"
elif command -v nvcc >/dev/null; then
  say "cuda: $(command -v nvcc)"
else
  say "cuda: none: the build will be CPU-only (load the CUDA module, or set CUDA_HOME, for the GPU path)"
fi

cat >"$prefix/env.sh" <<EOF
# Written by scripts/setup.sh --prefix=$prefix. Source it before building:
#   module load ...   # the cluster's CUDA, MPI and OpenBLAS, if it has modules
#   source $prefix/env.sh
export MOE_TRAIN_PREFIX="$prefix\${MOE_TRAIN_PREFIX:+:\$MOE_TRAIN_PREFIX}"
export MOE_TRAIN_VENDOR_DIR="$MOE_TRAIN_VENDOR_DIR"
export PATH="$prefix/bin:\$PATH"
EOF
say "wrote $prefix/env.sh; source it, then: bazel run //third_party:found && bazel test //..."

if ((${#missing[@]})); then
  for m in "${missing[@]}"; do echo "setup.sh --prefix: missing: $m" >&2; done
  exit 1
fi
say "everything the build needs is present"
