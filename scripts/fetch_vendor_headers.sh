#!/usr/bin/env bash
# Fetches the two header-only NVIDIA packages the GPU build compiles against,
# pinned by version and SHA-256, into the vendor cache that the Bazel
# repositories @cudnn_frontend and @cutlass point at:
#   $MOE_TRAIN_VENDOR_DIR (default ~/.cache/moe_train/vendor)/<name>-<version>/include
# pip is only the download client (`pip download --no-deps`); nothing is
# installed, and no Python is needed to build or run. Idempotent: a package
# already unpacked is not fetched again.
set -euo pipefail

VENDOR_DIR=${MOE_TRAIN_VENDOR_DIR:-$HOME/.cache/moe_train/vendor}

# name | version | pip requirement and wheel selection | wheel SHA-256 | folder inside the wheel
PACKAGES=(
  "cudnn-frontend|1.16.0|nvidia-cudnn-frontend==1.16.0 --only-binary=:all: --python-version=3.11 --platform=manylinux_2_28_x86_64|5c4a8fc573d85a86e08b15d9bf37f729e2487298781867a492a59cde6ac295e2|include"
  "cutlass|4.2.0.0|nvidia-cutlass==4.2.0.0 --only-binary=:all:|f9599ada45c7bcb6bf53f7d3f0a7d154183e53451c01bfa59eecd37dd4a693f6|cutlass_library/source/include"
)

die() { echo "fetch_vendor_headers.sh: error: $*" >&2; exit 2; }

command -v python3 >/dev/null || die "python3 is needed as pip's interpreter (Debian: apt-get install python3 python3-pip)"
python3 -m pip --version >/dev/null 2>&1 || die "pip is missing (Debian: apt-get install python3-pip)"

for entry in "${PACKAGES[@]}"; do
  IFS='|' read -r name version requirement sha256 inner <<<"$entry"
  dest="$VENDOR_DIR/$name-$version"
  if [[ -f $dest/.complete ]]; then
    continue
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "fetch_vendor_headers.sh: downloading $name $version"
  # shellcheck disable=SC2086  # the requirement carries pip's selection flags
  python3 -m pip download --quiet --no-deps --dest "$work" $requirement ||
    die "pip could not download $name $version; check the network or the package index (PIP_INDEX_URL)"
  wheel=$(ls "$work"/*.whl 2>/dev/null | head -1)
  [[ -n $wheel ]] || die "pip gave no wheel for $name $version"
  got=$(sha256sum "$wheel" | cut -d' ' -f1)
  [[ $got == "$sha256" ]] || die "$(basename "$wheel"): SHA-256 $got, expected $sha256; refusing an unpinned file"
  # Unpack only the headers, then move them into place in one rename.
  python3 - "$wheel" "$inner" "$work/unpacked" <<'PY'
import os, sys, zipfile
wheel, inner, out = sys.argv[1], sys.argv[2].rstrip("/") + "/", sys.argv[3]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.filename.startswith(inner) and not info.is_dir():
            target = os.path.join(out, "include", info.filename[len(inner):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(info) as src, open(target, "wb") as dst:
                dst.write(src.read())
PY
  [[ -d $work/unpacked/include ]] || die "$(basename "$wheel") holds no $inner"
  echo "$name $version $sha256" >"$work/unpacked/.complete"
  mkdir -p "$VENDOR_DIR"
  rm -rf "$dest"
  mv "$work/unpacked" "$dest"
  rm -rf "$work"
  trap - EXIT
done
echo "fetch_vendor_headers.sh: cudnn-frontend and cutlass headers in $VENDOR_DIR"
