package system

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestCloseInheritedOnExec(t *testing.T) {
	for _, tc := range []struct {
		name       string
		closeRange func(first, last, flags uint) error
	}{
		{"close_range", unix.CloseRange},
		{"fallback without close_range", func(uint, uint, uint) error { return unix.ENOSYS }},
		{"fallback without CLOSE_RANGE_CLOEXEC", func(uint, uint, uint) error { return unix.EINVAL }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			closeRange = tc.closeRange
			defer func() { closeRange = unix.CloseRange }()
			var p [2]int
			if err := unix.Pipe2(p[:], 0); err != nil { // inherited fds arrive without CLOEXEC
				t.Fatal(err)
			}
			defer unix.Close(p[0])
			defer unix.Close(p[1])
			if err := CloseInheritedOnExec(); err != nil {
				t.Fatal(err)
			}
			for _, fd := range p {
				flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
				if err != nil || flags&unix.FD_CLOEXEC == 0 {
					t.Errorf("fd %d: flags %#x, %v; want FD_CLOEXEC and still open", fd, flags, err)
				}
			}
			for _, fd := range []int{0, 1, 2} {
				if flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC != 0 {
					t.Errorf("fd %d marked close-on-exec: stdio must be inherited", fd)
				}
			}
		})
	}
}
