package handoff

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// What a PID 1 re-exec hands to the next process image from this package: the notify socket
// and the fd store, as fds that survive execve (duplicates without close-on-exec, owned by
// the re-exec until it happens or is abandoned) with what describes them.

// DupForExec duplicates fd above 2 without close-on-exec: the copy survives execve.
func DupForExec(fd int) (int, error) {
	n, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD, 3)
	if err != nil {
		return -1, fmt.Errorf("fcntl(%d, F_DUPFD, 3): %w", fd, err)
	}
	return n, nil
}

// StopReading makes the reader's pending and next Read return (a deadline in the past): the
// notify goroutine ends, so no datagram is read by a process image about to be replaced.
// ResumeReading undoes it.
func (n *NotifySocket) StopReading() error { return n.conn.SetReadDeadline(time.Unix(1, 0)) }

// ResumeReading clears the deadline StopReading set.
func (n *NotifySocket) ResumeReading() error { return n.conn.SetReadDeadline(time.Time{}) }

// DupForExec duplicates the notify socket for the next process image.
func (n *NotifySocket) DupForExec() (int, error) {
	raw, err := n.conn.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := raw.Control(func(f uintptr) { fd, derr = DupForExec(int(f)) }); err != nil {
		return -1, err
	}
	return fd, derr
}

// NotifyFromFd takes over a notify socket a previous process image bound at path, as a
// duplicate of fd: the caller closes fd (once it is sure not to hand it on again).
// SO_PASSCRED is a property of the socket, so it still holds.
func NotifyFromFd(path string, fd int) (*NotifySocket, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3) // fd itself stays as it is
	if err != nil {
		return nil, fmt.Errorf("notify socket %s (fd %d): %w", path, fd, err)
	}
	f := os.NewFile(uintptr(dup), "notify:"+path)
	c, err := net.FileConn(f) // another duplicate, non-blocking, in Go's poller
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("notify socket %s (fd %d): %w", path, fd, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("notify socket %s (fd %d): not a unix socket", path, fd)
	}
	return &NotifySocket{Path: path, conn: uc}, nil
}

// SavedFD is one fd-store entry handed to the next process image.
type SavedFD struct {
	Name string `json:"name"`
	Fd   int    `json:"fd"`
	Poll bool   `json:"poll"`
}

// DupForExec duplicates every stored fd, in order, for the next process image. Taken under
// the store's lock: the watcher cannot close one between the listing and the copy.
func (s *FDStore) DupForExec() ([]SavedFD, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]SavedFD, 0, len(s.entries))
	for _, e := range s.entries {
		fd, err := DupForExec(e.fd)
		if err != nil {
			for _, x := range out {
				unix.Close(x.Fd)
			}
			return nil, fmt.Errorf("fd store %q: %w", e.name, err)
		}
		out = append(out, SavedFD{Name: e.name, Fd: fd, Poll: e.poll})
	}
	return out, nil
}

// Restore puts entries a previous process image stored back, in their order (fds consumed).
func (s *FDStore) Restore(entries []SavedFD) error {
	var errs []error
	for _, e := range entries {
		if err := s.Add(e.Name, []int{e.Fd}, e.Poll); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
