package system

import (
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"
)

// Mountpoint is one file system PID 1 mounts at boot.
type Mountpoint struct {
	Source string
	Target string
	FSType string
	Flags  uintptr
	Data   string
	// Optional mounts may fail without a warning (e.g. cgroup2 on a kernel without it).
	Optional bool
}

const nodevExec = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// BaseMounts is what every appliance has, in mount order. devtmpfs is not mounted by the
// kernel in Debian's configuration (DEVTMPFS_MOUNT is off), so it is here.
var BaseMounts = []Mountpoint{
	{Source: "proc", Target: "/proc", FSType: "proc", Flags: nodevExec},
	{Source: "sysfs", Target: "/sys", FSType: "sysfs", Flags: nodevExec},
	{Source: "devtmpfs", Target: "/dev", FSType: "devtmpfs", Flags: unix.MS_NOSUID, Data: "mode=0755"},
	{Source: "devpts", Target: "/dev/pts", FSType: "devpts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "gid=5,mode=0620,ptmxmode=0666"},
	{Source: "tmpfs", Target: "/dev/shm", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=1777"},
	{Source: "tmpfs", Target: "/run", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=0755"},
	{Source: "tmpfs", Target: "/tmp", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=1777"},
	{Source: "cgroup2", Target: "/sys/fs/cgroup", FSType: "cgroup2", Flags: nodevExec, Data: "nsdelegate", Optional: true},
}

// MountAll mounts each entry in order. A failure is logged with its cause and the rest go on:
// a machine without /dev/shm still boots, and the log says why it is missing.
func MountAll(log *slog.Logger, table []Mountpoint) (failed int) {
	for _, m := range table {
		start := time.Now()
		_, err := mount.Mount(m.Source, m.Target, m.FSType, m.Data, m.Flags, func() error {
			return os.MkdirAll(m.Target, 0o755)
		})
		switch {
		case err == nil:
			log.Debug("mounted", "target", m.Target, "type", m.FSType, "took", time.Since(start))
		case m.Optional:
			log.Info("optional mount skipped", "target", m.Target, "type", m.FSType, "err", err)
		default:
			failed++
			log.Error("mount failed; continuing without it", "target", m.Target, "type", m.FSType, "err", err)
		}
	}
	return failed
}

// UnmountAll unmounts every file system below / with a store behind it (deepest first) or,
// when it is busy, remounts it read-only, so that nothing is left dirty before reboot(2).
func UnmountAll(log *slog.Logger) {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		log.Warn("cannot list mounts; skipping unmount", "err", err)
		return
	}
	for _, t := range unmountTargets(string(data)) {
		if err := unix.Unmount(t, 0); err == nil {
			continue
		}
		if err := unix.Mount("", t, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			log.Debug("left mounted", "target", t, "err", err)
		}
	}
}

// unmountTargets lists what UnmountAll unmounts, deepest first: the mounts below / with a
// store, and those without one (nothingToWrite) that lie below or over a mount with a store —
// a tmpfs on /data/cache left mounted would keep /data busy, and /data only remounted
// read-only; a tmpfs mounted over /data takes the one unmount of that path. A path holding
// several mounts is listed once for each.
func unmountTargets(mounts string) []string {
	type mnt struct {
		target string
		store  bool
	}
	var all []mnt
	for _, line := range strings.Split(mounts, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		if t := unescapeMount(f[1]); t != "/" {
			all = append(all, mnt{t, !nothingToWrite[f[2]]})
		}
	}
	var targets []string
	for _, m := range all {
		keep := m.store
		for _, s := range all {
			keep = keep || s.store && (m.target == s.target || strings.HasPrefix(m.target, strings.TrimSuffix(s.target, "/")+"/"))
		}
		if keep {
			targets = append(targets, m.target)
		}
	}
	// Deeper paths first; /proc last-ish matters not, since we no longer read it after this.
	sort.SliceStable(targets, func(i, j int) bool { return len(targets[i]) > len(targets[j]) })
	return targets
}

// nothingToWrite are the file system types with no store behind them: the kernel's views
// (proc, sysfs, cgroups, …) and those in memory. Unmounting them before the power action
// saves nothing, and cost about 40 ms of a kexec's downtime under QEMU's TCG.
var nothingToWrite = map[string]bool{
	"proc": true, "sysfs": true, "devtmpfs": true, "devpts": true, "tmpfs": true, "ramfs": true,
	"rootfs": true, "cgroup": true, "cgroup2": true, "securityfs": true, "debugfs": true,
	"tracefs": true, "pstore": true, "bpf": true, "mqueue": true, "configfs": true,
	"hugetlbfs": true, "fusectl": true, "binfmt_misc": true, "autofs": true, "efivarfs": true,
}

// unescapeMount undoes the octal escapes of /proc/self/mounts (space is \040).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%3o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
