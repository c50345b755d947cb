#!/usr/bin/env bash
# Runs containers/Dockerfile's instructions, in order, as `docker build` would,
# inside a local Ubuntu root made with debootstrap: the check of the container
# recipes where no registry (and so no nvidia/cuda image) can be reached.
# Needs root (chroot, mount namespaces) and debootstrap. Run by hand; about
# 15 minutes on two cores, most of it the build and tests inside.
#
#   scripts/check_container_steps.sh [WORK_DIR]
#
# What stands in for the image:
#   - its Ubuntu: `debootstrap --variant=minbase` of the release that the
#     Dockerfile's default BASE names (ubuntu24.04: noble), from
#     archive.ubuntu.com, with main and universe as in NVIDIA's images;
#   - its CUDA toolkit: this machine's (CUDA_HOME, else /usr/local/cuda),
#     mounted read-only at /usr/local/cuda.
# ARG and ENV set the environment of later steps, WORKDIR changes folder,
# `COPY . .` copies the working tree (git's files, less the patterns of
# containers/Dockerfile.dockerignore), RUN runs `/bin/sh -c` in the root, and
# CMD runs last. The Apptainer recipe installs the same packages and runs the
# same commands: its %post must parse (sh -n) and hold each package and
# each build command of the Dockerfile, and nothing else.
# The root stays in WORK_DIR/root (default /tmp/moe_train_container_check) and
# is reused by the next run; delete it to start from a bare system.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
work=$(realpath -m "${1:-/tmp/moe_train_container_check}")
root=$work/root
dockerfile=containers/Dockerfile
def=containers/moe_train.def
say() { echo "check_container_steps.sh: $*"; }
die() { echo "check_container_steps.sh: error: $*" >&2; exit 2; }

[[ $(id -u) -eq 0 ]] && unshare -m true 2>/dev/null || die "needs root and mount namespaces (unshare -m)"
command -v debootstrap >/dev/null || die "needs debootstrap (apt-get install debootstrap)"

mkdir -p "$work"
join_lines() { sed -e ':a' -e '/\\$/N; s/\\\n//; ta'; }  # a line ending in \ continues on the next

# --- the Dockerfile as a list of instructions: comments dropped, \ lines joined ---------
mapfile -t instructions < <(sed -e '/^[[:space:]]*#/d' "$dockerfile" | join_lines | sed -e '/^[[:space:]]*$/d')
base=$(sed -n 's/^ARG BASE=//p' "$dockerfile")
case "$base" in
  *ubuntu24.04) release=noble ;;
  *ubuntu22.04) release=jammy ;;
  *) die "$dockerfile: BASE=$base is not an Ubuntu 22.04 or 24.04 image; this check knows only those" ;;
esac

# --- the Apptainer recipe: the same packages and build commands as the Dockerfile ------
section() {  # FILE NAME: the body of one %section of an Apptainer recipe
  awk -v want="%$2" '/^%/ { inside = ($1 == want); next } inside' "$1"
}
# Words that follow "apt-get install ... -y --no-install-recommends" in a text.
packages_of() { grep -o 'install -y --no-install-recommends[^&;]*' | sed 's/install -y --no-install-recommends//' |
  tr -s ' \\\n' '\n' | sed '/^$/d' | sort -u; }
# The build's own commands, one per line.
commands_of() { grep -oE '(scripts/setup\.sh|bazel|install -D) [^&\\]*' | sed 's/[[:space:]]*$//'; }
section "$def" post | join_lines >"$work/post.sh"
sh -n "$work/post.sh" || die "$def: %post does not parse as a shell script"
docker_runs=$(printf '%s\n' "${instructions[@]}" | sed -n 's/^RUN //p')
diff >&2 <(packages_of <<<"$docker_runs") <(packages_of <"$work/post.sh") ||
  die "$def installs other packages than $dockerfile (< Dockerfile, > %post)"
diff >&2 <(commands_of <<<"$docker_runs") <(commands_of <"$work/post.sh") ||
  die "$def runs other build commands than $dockerfile (< Dockerfile, > %post)"
rm -f "$work/post.sh"
say "$def: %post parses and installs and runs what $dockerfile does"

# --- the Ubuntu root --------------------------------------------------------------------
if [[ ! -f $root/.debootstrapped ]]; then
  keyring=/usr/share/keyrings/ubuntu-archive-keyring.gpg
  if [[ ! -f $keyring ]]; then
    # Ubuntu's archive key, from its keyring package, pinned by SHA-256.
    url=http://archive.ubuntu.com/ubuntu/pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb
    sha=36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8
    curl -fsSL --retry 2 -o "$work/keyring.deb" "$url" || die "could not download $url"
    [[ $(sha256sum "$work/keyring.deb" | cut -d' ' -f1) == "$sha" ]] || die "$url: unexpected SHA-256"
    (cd "$work" && rm -rf keyring && mkdir keyring && cd keyring && ar x ../keyring.deb && tar -xf data.tar.*)
    keyring=$work/keyring/usr/share/keyrings/ubuntu-archive-keyring.gpg
  fi
  rm -rf "$root"
  say "debootstrap of Ubuntu $release into $root"
  debootstrap --variant=minbase --components=main,universe --keyring="$keyring" \
    "$release" "$root" http://archive.ubuntu.com/ubuntu /usr/share/debootstrap/scripts/gutsy >"$work/debootstrap.log" 2>&1 ||
    die "debootstrap failed; see $work/debootstrap.log"
  cat >"$root/etc/apt/sources.list" <<EOF
deb http://archive.ubuntu.com/ubuntu $release main universe
deb http://archive.ubuntu.com/ubuntu $release-updates main universe
deb http://archive.ubuntu.com/ubuntu $release-security main universe
EOF
  touch "$root/.debootstrapped"
fi
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# This machine's trusted certificates join the image's (a site's proxy may sign
# with its own authority); the ca-certificates package adds them to its bundle.
mkdir -p "$root/usr/local/share/ca-certificates"
cp -L /etc/ssl/certs/ca-certificates.crt "$root/usr/local/share/ca-certificates/this-machine.crt"
rm -rf "$root/opt/moe_train" "$root/.container_env"

cuda=$(realpath "${CUDA_HOME:-/usr/local/cuda}")
[[ -x $cuda/bin/nvcc ]] || die "no CUDA toolkit at $cuda to stand in for the image's; set CUDA_HOME"

# --- inside a mount namespace: the mounts go when it ends ----------------------------------
cat >"$work/inside.sh" <<'INNER'
set -euo pipefail
repo=$1 root=$2 cuda=$3 work=$4
shift 4
instructions=("$@")
say() { echo "check_container_steps.sh: $*"; }
mount --make-rprivate /
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mkdir -p "$root/usr/local/cuda"
mount --bind "$cuda" "$root/usr/local/cuda"
mount -o remount,bind,ro "$root/usr/local/cuda"
say "the image's CUDA toolkit: $cuda at /usr/local/cuda (read-only)"

# NVIDIA's CUDA images set these.
image_env=(HOME=/root PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64)
in_root() {  # DIR COMMAND: /bin/sh -c COMMAND in the root, with the environment so far
  chroot "$root" env -i "${image_env[@]}" /bin/sh -c ". /.container_env && cd '$1' && $2"
}
: >"$root/.container_env"
[[ -x $root/usr/sbin/update-ca-certificates ]] && in_root / "update-ca-certificates >/dev/null 2>&1"

dir=/
cmd=""
for line in "${instructions[@]}"; do
  keyword=${line%% *}
  rest=${line#* }
  case "$keyword" in
    ARG) [[ $rest == BASE=* ]] || { echo "export ${rest%%=*}=\"\${${rest%%=*}:-${rest#*=}}\"" >>"$root/.container_env"; } ;;
    FROM) say "FROM $rest (stand-in: the Ubuntu root)" ;;
    ENV) echo "export $rest" >>"$root/.container_env" ;;
    WORKDIR)
      dir=$rest
      mkdir -p "$root$dir"
      ;;
    COPY)
      [[ $rest == ". ." ]] || { echo "check_container_steps.sh: error: COPY $rest: only 'COPY . .' is known to this check" >&2; exit 2; }
      ignored=$(sed -e 's/[.]/[.]/g' -e 's/[*]/.*/g' -e 's/^/^/' "$repo/containers/Dockerfile.dockerignore" | paste -sd'|')
      (cd "$repo" && git ls-files -co --exclude-standard | while IFS= read -r f; do [[ -e $f ]] && echo "$f"; done |
        grep -v -E "$ignored" | tar -T - -cf -) | tar -xf - -C "$root$dir"
      say "COPY . . -> $dir ($(find "$root$dir" -type f | wc -l) files)"
      ;;
    RUN)
      say "RUN $rest"
      start=$SECONDS
      in_root "$dir" "$rest"
      say "RUN done in $((SECONDS - start)) s"
      ;;
    CMD) cmd=$(sed -e 's/^\[//' -e 's/\]$//' -e 's/"//g' -e 's/,/ /g' <<<"$rest") ;;
    *) echo "check_container_steps.sh: error: $keyword: not known to this check" >&2; exit 2 ;;
  esac
done
say "CMD $cmd"
in_root "$dir" "$cmd"
INNER
rc=0
unshare -m bash "$work/inside.sh" "$repo" "$root" "$cuda" "$work" "${instructions[@]}" || rc=$?
# A Bazel server left by a failed step would keep the root's mounts: stop
# every process whose root folder is the Ubuntu root.
for p in /proc/[0-9]*; do
  [[ $(readlink "$p/root" 2>/dev/null) == "$root" ]] && kill "${p#/proc/}" 2>/dev/null || true
done
say "exit $rc"
exit "$rc"
