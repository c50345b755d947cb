#!/usr/bin/env bash
# Lays out a CUDA 12.4 toolkit folder, without root, for the CUDA 12
# compatibility build: `CUDA_HOME=DIR bazel build //src:moe_train`.
#   scripts/cuda12_toolkit.sh DIR
#
# NVIDIA's pip wheels (pinned by version and SHA-256) give the headers and
# libraries: the runtime, CCCL (Thrust, CUB, libcu++), cuBLAS, NCCL and cuDNN,
# plus ptxas, libnvvm and the crt headers. They carry no compiler driver:
# nvcc, cicc, cudafe++, fatbinary and nvlink come from Debian's
# nvidia-cuda-toolkit 12.4.131 package (non-free, pinned likewise), unpacked
# with ar and tar. The folder gets the usual layout (bin/, nvvm/, include/,
# lib64/) and an nvcc.profile that points into it. Idempotent: a complete
# folder is left alone.
set -euo pipefail

die() { echo "cuda12_toolkit.sh: error: $*" >&2; exit 2; }
[[ $# -eq 1 && -n $1 ]] || die "usage: scripts/cuda12_toolkit.sh DIR"
mkdir -p "$1"
dest=$(cd "$1" && pwd)
[[ -f $dest/.complete ]] && { echo "cuda12_toolkit.sh: $dest is complete"; exit 0; }
command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1 ||
  die "python3 with pip is needed as the wheels' download client"

# requirement | SHA-256 of the wheel
WHEELS=(
  "nvidia-cuda-nvcc-cu12==12.4.131|e4c9a35435c3b0e36c6397c5696334c9ea6650e524736cbd1c5d345ea099bb04"
  "nvidia-cuda-runtime-cu12==12.4.127|64403288fa2136ee8e467cdc9c9427e0434110899d07c779f25b5c068934faa5"
  "nvidia-cuda-cccl-cu12==12.4.127.post1|2027fa5fc75fbee703bf24e8275a40a605cf94a3e8fef8a7187897d49b34facb"
  "nvidia-cublas-cu12==12.4.5.8|2fc8da60df463fdefa81e323eef2e36489e1c94335b5358bcb38360adf75ac9b"
  "nvidia-nccl-cu12==2.21.5|8579076d30a8c24988834445f8d633c697d42397e92ffc3f63fa26766d25e0a0"
  "nvidia-cudnn-cu12==9.1.0.70|165764f44ef8c61fcdfdfdbe769d687e06374059fbb388b6c89ecb0e28793a6f"
)
DEB_URL=http://deb.debian.org/debian/pool/non-free/n/nvidia-cuda-toolkit/nvidia-cuda-toolkit_12.4.131~12.4.1-2_amd64.deb
DEB_SHA256=cd5fe85aee38d108b315f408a688641478f2402622a10c677478eb7a6c4e5319

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
check() {  # FILE SHA256
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [[ $got == "$2" ]] || die "$(basename "$1"): SHA-256 $got, expected $2; refusing an unpinned file"
}

# --- the wheels: nvidia/<package>/{include,lib,bin,nvvm} merged into DIR --------
for entry in "${WHEELS[@]}"; do
  IFS='|' read -r requirement sha <<<"$entry"
  echo "cuda12_toolkit.sh: $requirement"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version=3.11 \
    --platform=manylinux2014_x86_64 --platform=manylinux_2_17_x86_64 --dest "$work/wheels" "$requirement" ||
    die "pip could not download $requirement; check the network or the package index (PIP_INDEX_URL)"
  wheel=$(ls -t "$work"/wheels/*.whl | head -1)
  check "$wheel" "$sha"
  python3 - "$wheel" "$dest" <<'PY'
import os, stat, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        parts = info.filename.split("/")
        # nvidia/<package>/<top>/...: keep include, lib, bin and nvvm
        if len(parts) < 4 or parts[0] != "nvidia" or info.is_dir():
            continue
        top, rest = parts[2], parts[3:]
        if top not in ("include", "lib", "bin", "nvvm") or rest[-1] == "__init__.py":
            continue
        target = os.path.join(dest, "lib64" if top == "lib" else top, *rest)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, "wb") as out:
            out.write(src.read())
        if (info.external_attr >> 16) & stat.S_IXUSR or top == "bin":
            os.chmod(target, 0o755)
PY
  rm -f "$wheel"
done
# Link names for the libraries the wheels ship by soname only.
(cd "$dest/lib64" && for so in *.so.[0-9]*; do base=${so%%.so.*}.so; [[ -e $base ]] || ln -s "$so" "$base"; done)

# --- the compiler driver from Debian's package ------------------------------------
echo "cuda12_toolkit.sh: nvcc, cicc, cudafe++, fatbinary and nvlink from $(basename "$DEB_URL")"
curl -fsSL --retry 2 -o "$work/toolkit.deb" "$DEB_URL" || die "could not download $DEB_URL"
check "$work/toolkit.deb" "$DEB_SHA256"
(cd "$work" && ar x toolkit.deb && mkdir -p deb && tar -xf data.tar.* -C deb)
tk=$work/deb/usr/lib/nvidia-cuda-toolkit
mkdir -p "$dest/bin/crt" "$dest/nvvm/bin" "$dest/nvvm/libdevice"
cp "$tk/bin/nvcc" "$dest/bin/nvcc"
cp "$tk/bin/cicc" "$dest/nvvm/bin/cicc"
cp "$tk"/bin/crt/*.stub "$dest/bin/crt/"
cp "$tk/libdevice/libdevice.10.bc" "$dest/nvvm/libdevice/"
for tool in cudafe++ fatbinary nvlink bin2c nvprune; do cp "$work/deb/usr/bin/$tool" "$dest/bin/"; done
chmod 755 "$dest"/bin/* "$dest/nvvm/bin/cicc"
# NVIDIA's layout, relative to this folder (Debian's profile names /usr paths).
cat >"$dest/bin/nvcc.profile" <<'EOF'
TOP              = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
LD_LIBRARY_PATH += $(TOP)/lib64:
PATH            += $(TOP)/nvvm/bin:$(_HERE_):
INCLUDES        +=  "-I$(TOP)/include" $(_SPACE_)
LIBRARIES        =+ $(_SPACE_) "-L$(TOP)/lib64"
CUDAFE_FLAGS    +=
PTXAS_FLAGS     +=
EOF
"$dest/bin/nvcc" --version | tail -2
echo "CUDA 12.4.131 toolkit folder from pip wheels and Debian's nvidia-cuda-toolkit" >"$dest/.complete"
echo "cuda12_toolkit.sh: done; build with CUDA_HOME=$dest"
