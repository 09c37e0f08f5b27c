package system

import (
	"reflect"
	"testing"
)

// What UnmountAll unmounts: file systems with a store, deepest first, and the ones without a
// store only where they would keep a file system with one busy.
func TestUnmountTargets(t *testing.T) {
	mounts := `rootfs / rootfs rw 0 0
proc /proc proc rw,nosuid,nodev,noexec 0 0
sysfs /sys sysfs rw 0 0
devtmpfs /dev devtmpfs rw 0 0
tmpfs /run tmpfs rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw 0 0
/dev/vda1 /boot vfat rw 0 0
/dev/vdb /data ext4 rw 0 0
tmpfs /data/cache tmpfs rw 0 0
proc /data/chroot/proc proc rw 0 0
tmpfs /database tmpfs rw 0 0
/dev/vdc /mnt/my\040disk ext4 rw 0 0
/dev/vdd /srv ext4 rw 0 0
tmpfs /srv tmpfs rw 0 0
`
	want := []string{"/data/chroot/proc", "/mnt/my disk", "/data/cache", "/boot", "/data", "/srv", "/srv"}
	if got := unmountTargets(mounts); !reflect.DeepEqual(got, want) {
		t.Errorf("unmountTargets = %q, want %q", got, want)
	}
}
