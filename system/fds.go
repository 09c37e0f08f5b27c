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
