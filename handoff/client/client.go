// Package client is what a service links to work with baton (or systemd): its listening
// sockets (sd_listen_fds), readiness and status (sd_notify), the fd store, the watchdog, and
// baton's handoff of live connections to the next version during an upgrade. It is small on
// purpose, in the spirit of coreos/go-systemd's activation and daemon packages.
package client

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Notify sends state ("READY=1", "STATUS=…", several lines at once) to $NOTIFY_SOCKET, as
// sd_notify(3) does. It does nothing when the variable is unset (not supervised). A path
// starting with "@" is in the abstract namespace.
func Notify(state string) error { return notifyFds(state, nil) }

func notifyFds(state string, fds []int) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	addr := path
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	// A raw socket: net's connected datagram sockets refuse messages with control data.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("notify %s: %w", path, err)
	}
	defer unix.Close(fd)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(fd, []byte(state), oob, &unix.SockaddrUnix{Name: addr}, unix.MSG_NOSIGNAL); err != nil {
		return fmt.Errorf("notify %s: %w", path, err)
	}
	return nil
}

// Ready tells the supervisor the service is ready to serve. Under baton it also starts
// listening for an upgrade's handoff channel (see Successor).
func Ready() error {
	startControl()
	return Notify("READY=1")
}

// Stopping tells the supervisor the service has begun to shut down.
func Stopping() error { return Notify("STOPPING=1") }

// Status sets the free-form status line shown by initctl status.
func Status(s string) error { return Notify("STATUS=" + s) }

// withFd runs fn with the fd of a file or connection, kept valid for the call.
func withFd(c syscall.Conn, fn func(fd int) error) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
