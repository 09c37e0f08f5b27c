// Package handoff is baton's socket layer: the systemd-compatible notify socket now, and the
// listening sockets PID 1 holds for services.
package handoff

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// NotifySocket is the AF_UNIX datagram socket a service reaches through $NOTIFY_SOCKET.
// Credentials are requested on it (SO_PASSCRED), so every datagram carries the sender's pid as
// checked by the kernel, which is what authenticates it.
type NotifySocket struct {
	Path string
	conn *net.UnixConn
}

// Message is one notify datagram.
type Message struct {
	Pid    int // the sender, from SCM_CREDENTIALS
	Uid    int
	Fields map[string]string
	Fds    []int // fds sent with SCM_RIGHTS; the receiver owns them
}

// maxFds is systemd's limit per message (SCM_MAX_FD is 253).
const maxFds = 253

// ListenNotify creates the socket at path, replacing a stale one. mode is applied to the file:
// services running as another user need write permission to send.
func ListenNotify(path string, mode os.FileMode) (*NotifySocket, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("notify socket %s: remove stale: %w", path, err)
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket %s: %w", path, err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket %s: SO_PASSCRED: %w", path, errors.Join(err, serr))
	}
	if err := os.Chmod(path, mode); err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket %s: %w", path, err)
	}
	return &NotifySocket{Path: path, conn: conn}, nil
}

// Close closes the socket and removes its file.
func (n *NotifySocket) Close() error {
	err := n.conn.Close()
	_ = os.Remove(n.Path)
	return err
}

// ErrTruncated means a datagram's control data did not fit: some fds were lost (closed by the
// kernel); the message itself is still returned.
var ErrTruncated = errors.New("notify message control data truncated (MSG_CTRUNC): fds were dropped")

// MaxNotify is the largest datagram read whole, systemd's NOTIFY_BUFFER_MAX (PIPE_BUF).
const MaxNotify = 4096

// ErrTooLarge means a datagram was longer than MaxNotify: its text was cut, so it is returned
// without fields (a cut "WATCHDOG_USEC=30000000" would read as 3 µs); the caller drops it.
var ErrTooLarge = fmt.Errorf("notify message longer than %d bytes (MSG_TRUNC): dropped", MaxNotify)

// Read waits for the next datagram. A datagram without credentials has Pid 0 and must be
// dropped by the caller.
func (n *NotifySocket) Read() (Message, error) {
	buf := make([]byte, MaxNotify)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*maxFds))
	nb, noob, flags, _, err := n.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return Message{}, err
	}
	m := Message{Fields: map[string]string{}}
	if flags&unix.MSG_TRUNC == 0 {
		m.Fields = ParseNotify(buf[:nb])
	}
	cmsgs, perr := unix.ParseSocketControlMessage(oob[:noob])
	if perr != nil {
		return m, fmt.Errorf("notify: control data: %w", perr)
	}
	for _, c := range cmsgs {
		if c.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch c.Header.Type {
		case unix.SCM_CREDENTIALS:
			if cred, err := unix.ParseUnixCredentials(&c); err == nil {
				m.Pid, m.Uid = int(cred.Pid), int(cred.Uid)
			}
		case unix.SCM_RIGHTS:
			if fds, err := unix.ParseUnixRights(&c); err == nil {
				m.Fds = append(m.Fds, fds...)
			}
		}
	}
	switch {
	case flags&unix.MSG_TRUNC != 0:
		return m, ErrTooLarge
	case flags&unix.MSG_CTRUNC != 0:
		return m, ErrTruncated
	}
	return m, nil
}

// CloseFds closes the fds that came with m (those not taken into an fd store).
func (m Message) CloseFds() {
	for _, fd := range m.Fds {
		unix.Close(fd)
	}
}

// ParseNotify parses newline-separated KEY=VALUE lines; lines without '=' are ignored, as
// systemd does, and a later key wins.
func ParseNotify(b []byte) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && k != "" {
			out[k] = v
		}
	}
	return out
}
