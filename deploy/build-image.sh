#!/usr/bin/env bash
# Builds the container image from a checkout:
#
#   deploy/build-image.sh [TAG]          (default tag: switchyard:latest)
#
# 1. builds the release binary (`cargo build --release`),
# 2. lays out the build context: the binary (stripped of its debug info) under both names,
#    the shared libraries it loads (as `ldd` lists them), the dynamic loader, the files
#    glibc reads at run time and the CA bundle,
# 3. runs `podman build` (or `docker build` where there is no podman) on deploy/Containerfile.
#
# SWITCHYARD_BINARY=<path> packages that binary instead of building one (the tests use the
# debug binary they already have); CONTAINER_ENGINE=podman|docker picks the engine;
# CONTAINER_BUILD_FLAGS adds flags to its `build` (podman on a host without systemd may
# need `--cgroup-manager cgroupfs` there, given before `build`: see CONTAINER_GLOBAL_FLAGS).
set -euo pipefail

tag=${1:-switchyard:latest}
root=$(cd "$(dirname "$0")/.." && pwd)

say() { printf 'build-image: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

engine=${CONTAINER_ENGINE:-}
if [ -z "$engine" ]; then
  if command -v podman >/dev/null 2>&1; then
    engine=podman
  elif command -v docker >/dev/null 2>&1; then
    engine=docker
  else
    die "neither podman nor docker is installed"
  fi
fi
command -v ldd >/dev/null 2>&1 || die "ldd is needed to find the binary's shared libraries"

binary=${SWITCHYARD_BINARY:-}
if [ -z "$binary" ]; then
  say "building the release binary"
  (cd "$root" && cargo build --release --locked -p switchyard-server --bin switchyard)
  binary="${CARGO_TARGET_DIR:-$root/target}/release/switchyard"
fi
[ -x "$binary" ] || die "no binary at $binary"

ctx=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
rootfs=$ctx/rootfs
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"

# The binary without its debug info (the release profile keeps line tables for
# backtraces on the host; the image does not need them).
if command -v objcopy >/dev/null 2>&1; then
  objcopy --strip-debug "$binary" "$rootfs/usr/local/bin/switchyard"
else
  cp "$binary" "$rootfs/usr/local/bin/switchyard"
fi
chmod 0755 "$rootfs/usr/local/bin/switchyard"
# A relative symbolic link: `command: ["configurable-http-proxy"]` finds it on PATH.
ln -s switchyard "$rootfs/usr/local/bin/configurable-http-proxy"

# Every shared library the binary loads, and the loader, at the paths the binary and the
# loader look them up by (the files themselves, not the links to them).
libs=$(ldd "$binary" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }')
[ -n "$libs" ] || die "ldd listed no library for $binary (a static binary needs none: remove this check)"
for lib in $libs; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done

# glibc's name service: host names from /etc/hosts then DNS (the container runtime
# provides hosts and resolv.conf); users for the `nobody` the image runs as.
cat >"$rootfs/etc/nsswitch.conf" <<'NSS'
passwd: files
group: files
hosts: files dns
NSS
cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP

# The CA bundle: `rediss://` reads the system's roots; TLS to https targets has the
# Mozilla roots built in and reads this file only for --client-ssl-ca given as a path.
ca=
for candidate in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
  if [ -s "$candidate" ]; then ca=$candidate; break; fi
done
[ -n "$ca" ] || die "no CA bundle found (install ca-certificates)"
cp -L "$ca" "$rootfs/etc/ssl/certs/ca-certificates.crt"

cp "$root/deploy/Containerfile" "$ctx/Containerfile"
say "building $tag with $engine"
# shellcheck disable=SC2086 # flag lists are word-split on purpose
"$engine" ${CONTAINER_GLOBAL_FLAGS:-} build ${CONTAINER_BUILD_FLAGS:-} -t "$tag" -f "$ctx/Containerfile" "$ctx"
say "built $tag"
