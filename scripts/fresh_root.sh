#!/usr/bin/env bash
# scripts/fresh_root.sh [CMD...]: runs CMD (default: scripts/test.sh, the README's test command)
# on a clean clone of HEAD inside a stock Debian 12 root that holds only ca-certificates and git,
# the way a new user's machine starts, so a missing install step fails here instead of on their
# machine. Needs root (debootstrap, mount, chroot). The root is debootstrapped once into
# $FRESH_ROOT_STORE (default /var/tmp/engine-fresh-root) and unpacked anew for every run; the CUDA
# toolkit at /usr/local/cuda, not a Debian package, is bind-mounted read-only as on a user's
# machine. Exit status: CMD's. CMD's output streams and is kept in $FRESH_ROOT_STORE/last.log.
set -euo pipefail
top=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
store=${FRESH_ROOT_STORE:-/var/tmp/engine-fresh-root}
cmd=("$@")
[ ${#cmd[@]} -gt 0 ] || cmd=(scripts/test.sh)
[ "$(id -u)" -eq 0 ] || { echo "fresh_root: needs root (debootstrap, mount, chroot)" >&2; exit 1; }
mkdir -p "$store"

mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

if [ ! -f "$store/bookworm.tar" ]; then
  command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  rm -rf "$store/build"
  echo "fresh_root: debootstrap bookworm from $mirror (once, about 3 minutes)"
  debootstrap --variant=minbase --include=ca-certificates,git bookworm "$store/build" "$mirror" >"$store/debootstrap.log" 2>&1 \
    || { tail -5 "$store/debootstrap.log"; exit 1; }
  [ -f /etc/apt/sources.list.d/debian.sources ] && cp /etc/apt/sources.list.d/debian.sources "$store/build/etc/apt/sources.list.d/"
  tar -C "$store/build" -cf "$store/bookworm.tar.part" . && mv "$store/bookworm.tar.part" "$store/bookworm.tar"
  rm -rf "$store/build"
fi

run=$(mktemp -d "$store/run.XXXXXX")
mounts=()
cleanup() {
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
  rm -rf "$run"
}
trap cleanup EXIT
tar -C "$run" -xf "$store/bookworm.tar"
for d in proc sys dev dev/pts dev/shm; do
  mkdir -p "$run/$d"; mount --bind "/$d" "$run/$d"; mounts+=("$run/$d")
done
cuda=$(readlink -f /usr/local/cuda 2>/dev/null || true)
if [ -n "$cuda" ] && [ -d "$cuda" ]; then
  mkdir -p "$run$cuda"; mount --bind -o ro "$cuda" "$run$cuda"; mounts+=("$run$cuda")
  [ "$cuda" = /usr/local/cuda ] || ln -sfn "$cuda" "$run/usr/local/cuda"
fi
cp /etc/resolv.conf "$run/etc/resolv.conf" 2>/dev/null || true
# Network, not packages: where this machine's egress intercepts TLS with a local CA (installed in
# /usr/local/share/ca-certificates), the root must trust that CA too or pip cannot reach PyPI at
# all; a user's machine has no such proxy. Copied like resolv.conf; nothing else of the host is.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$run/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$run/usr/local/share/ca-certificates/"
  cat /usr/local/share/ca-certificates/*.crt >> "$run/etc/ssl/certs/ca-certificates.crt"
fi
git clone -q "$top" "$run/work/project"
echo "fresh_root: running '${cmd[*]}' in a stock Debian 12 root, clean clone of $(git -C "$top" rev-parse --short HEAD) (log: $store/last.log)"
set +e
chroot "$run" /usr/bin/env -i HOME=/root CUDA_HOME=/usr/local/cuda \
  PATH=/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  CI="${CI:-}" LANG=C.UTF-8 /bin/bash -c 'cd /work/project && "$@"' bash "${cmd[@]}" 2>&1 | tee "$store/last.log"
rc=${PIPESTATUS[0]}
set -e
echo "fresh_root: '${cmd[*]}' exit status $rc"
exit $rc
