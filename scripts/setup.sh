#!/usr/bin/env bash
# The set-up step, in one of two ways:
#
#   scripts/setup.sh                 Debian or Ubuntu, as root or with sudo:
#                                    installs the Debian packages the build and
#                                    the tests need (apt-get).
#   scripts/setup.sh --prefix=DIR    anywhere, no root (a cluster's login node):
#                                    uses what the system and its modules
#                                    provide, fetches what it can into DIR, and
#                                    says exactly what is still missing.
#
# Both then fetch the two pinned header-only NVIDIA packages
# (scripts/fetch_vendor_headers.sh). Idempotent: what is present is not
# fetched or installed again.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

prefix=""
for arg in "$@"; do
  case "$arg" in
    --prefix=*) prefix=${arg#--prefix=} ;;
    -h | --help)
      sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "setup.sh: error: unknown argument '$arg'; use --prefix=DIR for a user-space install, or no argument for Debian's packages" >&2
      exit 2
      ;;
  esac
done

if [[ -n $prefix ]]; then
  exec "$here/setup_prefix.sh" "$prefix"
fi

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
  python3-matplotlib     # `moe_train plot` draws its PNG with it (nothing else uses Python)
)

if ! command -v dpkg-query >/dev/null; then
  echo "setup.sh: error: this is not a Debian or Ubuntu system (no dpkg-query); use scripts/setup.sh --prefix=DIR, which needs neither apt nor root" >&2
  exit 2
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
      echo "setup.sh: error: ${missing[*]} missing, and installing them needs root (no sudo here); use scripts/setup.sh --prefix=DIR instead" >&2
      exit 2
    fi
    SUDO="sudo"
  fi
  echo "setup.sh: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "setup.sh: all build and test packages present"

# cuDNN's C++ graph API and CUTLASS: header-only, pinned by version and SHA-256.
"$here/fetch_vendor_headers.sh"
