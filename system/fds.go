package system

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// closeRange is close_range(2); a test replaces it to take the fallback.
var closeRange = unix.CloseRange

// CloseInheritedOnExec marks every fd above 2 close-on-exec. Go opens its own fds that way,
// but fds baton inherited (a shell's, a CI runner's fd 251) would otherwise reach every
// service it starts. The fds stay open: whoever passed them may expect that.
func CloseInheritedOnExec() error {
	err := closeRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("close_range(3, ~0, CLOSE_RANGE_CLOEXEC): %w", err)
	}
	// Before Linux 5.11 (no close_range, or no CLOSE_RANGE_CLOEXEC): one fd at a time.
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("mark inherited fds close-on-exec: close_range unsupported, and listing them failed: %w", err)
	}
	var errs []error
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		// The directory fd ReadDir used is closed by now: EBADF for it is expected.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && !errors.Is(err, unix.EBADF) {
			errs = append(errs, fmt.Errorf("fcntl(%d, F_SETFD, FD_CLOEXEC): %w", fd, err))
		}
	}
	return errors.Join(errs...)
}

// FDUsage counts the fds this process has open and reads its soft RLIMIT_NOFILE.
func FDUsage() (open, limit int, err error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, fmt.Errorf("getrlimit(RLIMIT_NOFILE): %w", err)
	}
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0, 0, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return 0, 0, err
	}
	return len(names) - 1, int(min(rl.Cur, 1<<30)), nil // without the directory's own fd
}

// FDLimit is what RaiseFDLimit aims for: systemd's hard limit for services, far above what
// an appliance needs, far below fs.nr_open.
const FDLimit = 1 << 16

// RaiseFDLimit raises RLIMIT_NOFILE (soft and hard) to FDLimit, or as far as this process
// may: PID 1 starts with the kernel's 1024/4096, which a flood of connections and a few
// hundred services exhaust. It returns the limit now in force.
func RaiseFDLimit() (uint64, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("getrlimit(RLIMIT_NOFILE): %w", err)
	}
	if rl.Cur >= FDLimit {
		return rl.Cur, nil
	}
	want := unix.Rlimit{Cur: max(rl.Max, FDLimit), Max: max(rl.Max, FDLimit)}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err != nil {
		// Without CAP_SYS_RESOURCE (a container, a developer's shell) the hard limit is the
		// ceiling; that is the caller's choice, not an error.
		want = unix.Rlimit{Cur: rl.Max, Max: rl.Max}
		if err2 := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err2 != nil {
			return rl.Cur, fmt.Errorf("setrlimit(RLIMIT_NOFILE, %d): %w", want.Cur, err2)
		}
	}
	return want.Cur, nil
}
