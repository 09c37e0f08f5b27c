#!/usr/bin/env bash
# Fetches a Debian kernel package (default: the one linux-image-amd64 points at) and unpacks it
# under out/kernel/<flavour>/, printing nothing but errors and, at the end, the kernel path.
#
# Usage: qemu-tests/fetch-kernel.sh [FLAVOUR]     FLAVOUR: amd64 (default) | cloud-amd64
#
# Why a script and not Go: it is three apt/dpkg calls, and make, CI and the Go test harness all
# need the same ones.
set -euo pipefail

flavour=${1:-amd64}
top=$(cd "$(dirname "$0")/.." && pwd)
dest="$top/out/kernel/$flavour"

if compgen -G "$dest/boot/vmlinuz-*" >/dev/null; then
  ls "$dest"/boot/vmlinuz-* | head -n1
  exit 0
fi

meta="linux-image-$flavour"
if ! apt-cache show "$meta" >/dev/null 2>&1; then
  apt-get update -q >&2
fi
# The meta package only depends on the versioned image package; that one holds the kernel.
pkg=$(apt-cache depends "$meta" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
  echo "fetch-kernel: cannot find the versioned package behind $meta (apt-cache depends $meta)" >&2
  exit 1
fi

tmp=$(mktemp -d)
chmod 755 "$tmp"   # apt-get download drops to the _apt user
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q "$pkg" >&2)
mkdir -p "$dest.partial"
dpkg-deb -x "$tmp"/"$pkg"_*.deb "$dest.partial"
rm -rf "$dest"
mv "$dest.partial" "$dest"
ls "$dest"/boot/vmlinuz-* | head -n1
