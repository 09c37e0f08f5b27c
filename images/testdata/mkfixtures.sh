#!/usr/bin/env bash
# Regenerates the tiny fake kernel modules the image builder's tests read: empty ELF objects
# with a .modinfo section, laid out like lib/modules/<release>/. Needs gcc and objcopy.
set -euo pipefail
cd "$(dirname "$0")"
rel=modules/6.1.0-test
rm -rf modules
mkdir -p "$rel/kernel/drivers/virtio" "$rel/kernel/drivers/net" "$rel/kernel/fs"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo 'int x;' > "$tmp/e.c"; gcc -c -o "$tmp/e.o" "$tmp/e.c"
mod() { # path name depends aliases...
  local path=$1 name=$2 deps=$3; shift 3
  { printf 'license=GPL\0'; for a in "$@"; do printf 'alias=%s\0' "$a"; done
    printf 'depends=%s\0name=%s\0vermagic=6.1.0-test\0' "$deps" "$name"; } > "$tmp/mi"
  objcopy --add-section .modinfo="$tmp/mi" "$tmp/e.o" "$rel/kernel/$path"
}
mod drivers/virtio/virtio.ko virtio ""
mod drivers/virtio/virtio_ring.ko virtio_ring ""
mod drivers/virtio/virtio_pci.ko virtio_pci virtio_ring,virtio 'pci:v00001AF4d*sv*sd*bc*sc*i*'
mod drivers/net/failover.ko failover ""
mod drivers/net/net_failover.ko net_failover failover
mod drivers/net/virtio_net.ko virtio_net virtio_ring,virtio,net_failover 'virtio:d00000001v*'
mod fs/squashfs.ko squashfs "" fs-squashfs
mod drivers/net/broken-dep.ko broken_dep missing_mod
printf 'kernel/fs/ext4/ext4.ko\nkernel/crypto/crc32c_generic.ko\n' > "$rel/modules.builtin"
