#!/usr/bin/env bash
# The only set-up step: installs the Debian packages that the build and the
# tests need, then fetches the two pinned header-only NVIDIA packages
# (scripts/fetch_vendor_headers.sh). Idempotent: packages already present are not touched, and
# `apt-get update` runs at most once, only when something is missing.
set -euo pipefail

packages=(
  bazel-bootstrap        # Bazel 4.2.3, the build tool (works offline with third_party/ stubs)
  g++                    # C++17 compiler
  libspdlog-dev          # logging (pulls libfmt-dev)
  libfmt-dev
  libtomlplusplus-dev    # TOML parsing
  nlohmann-json3-dev     # JSON (--print-config, metrics, checkpoint metadata)
  catch2                 # unit tests (Catch2 2.13)
  libopenmpi-dev         # MPI headers and library: CPU ranks, NCCL bootstrap
  openmpi-bin            # mpirun for multi-rank tests
  libopenblas-dev        # CPU GEMMs
  fortunes               # real English text: the default training corpus when no dataset is configured
  clang                  # builds the libFuzzer target over the checkpoint readers (tests/fuzz)
  libclang-rt-14-dev     # libFuzzer and the sanitizer runtimes for clang 14
  python3-pip            # only as the download client of the two pinned NVIDIA header packages
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup.sh: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "setup.sh: all build and test packages present"

# cuDNN's C++ graph API and CUTLASS: header-only, pinned by version and SHA-256.
"$(dirname "${BASH_SOURCE[0]}")/fetch_vendor_headers.sh"
