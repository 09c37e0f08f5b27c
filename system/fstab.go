package system

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
)

// mountFlags are the options mount(8) turns into flags; the rest go to the file system.
var mountFlags = map[string]uintptr{
	"ro": unix.MS_RDONLY, "rw": 0, "noexec": unix.MS_NOEXEC, "nosuid": unix.MS_NOSUID,
	"nodev": unix.MS_NODEV, "noatime": unix.MS_NOATIME, "relatime": unix.MS_RELATIME,
	"sync": unix.MS_SYNCHRONOUS, "nofail": 0, "defaults": 0,
}

// ParseMountOptions splits "ro,noexec,codepage=437" into flags and file system data, and
// reports nofail.
func ParseMountOptions(opts string) (flags uintptr, data string, nofail bool) {
	var rest []string
	for _, o := range strings.Split(opts, ",") {
		if o == "" {
			continue
		}
		if f, ok := mountFlags[o]; ok {
			flags |= f
			nofail = nofail || o == "nofail"
			continue
		}
		rest = append(rest, o)
	}
	return flags, strings.Join(rest, ","), nofail
}

// MountConfigured mounts the config's [[mount]] entries in order. A failure is logged with its
// cause and the boot goes on (an error is returned unless the entry says nofail).
func MountConfigured(log *slog.Logger, ms []config.Mount) error {
	var failed []string
	for _, m := range ms {
		flags, data, nofail := ParseMountOptions(m.Options)
		err := mountOne(m, flags, data)
		switch {
		case err == nil:
			log.Info("mounted", "source", m.Source, "target", m.Target, "type", m.Type)
		case nofail:
			log.Info("optional mount skipped", "target", m.Target, "err", err)
		default:
			log.Error("mount failed; continuing without it", "target", m.Target, "err", err)
			failed = append(failed, m.Target)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("not mounted: %s", strings.Join(failed, ", "))
	}
	return nil
}

func mountOne(m config.Mount, flags uintptr, data string) error {
	dev, err := FindDevice(m.Source, m.Wait.Duration)
	if err != nil {
		return fmt.Errorf("mount %s (%s, %s): %w", m.Target, m.Source, m.Type, err)
	}
	if _, err := mount.Mount(dev, m.Target, m.Type, data, flags, func() error { return os.MkdirAll(m.Target, 0o755) }); err != nil {
		hint := ""
		if strings.Contains(err.Error(), "no such device") {
			hint = fmt.Sprintf(" — is the %s module in the image?", m.Type)
		}
		return fmt.Errorf("mount %s (%s = %s, %s): %w%s", m.Target, m.Source, dev, m.Type, err, hint)
	}
	return nil
}
