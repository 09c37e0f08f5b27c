package client

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Live connections move between versions of a service over a SOCK_SEQPACKET socket pair baton
// creates for an upgrade: one message per connection, its fd (SCM_RIGHTS) and an opaque state
// blob of the service's choosing. The old version gets its end over the control channel
// ($BATON_CTL_FD) once the new version is ready; the new version gets its end as
// $BATON_HANDOFF_FD when it starts.

// MaxState bounds the state blob sent with a connection.
const MaxState = 60 << 10

var (
	ctlOnce   sync.Once
	succMu    sync.Mutex
	successor int = -1
)

// startControl reads baton's control channel: an offered handoff channel is kept and
// acknowledged, so baton sends the stop signal only after this process knows its successor.
func startControl() {
	ctlOnce.Do(func() {
		fd, err := strconv.Atoi(os.Getenv("BATON_CTL_FD"))
		if err != nil || fd < 3 {
			return
		}
		os.Unsetenv("BATON_CTL_FD")
		unix.CloseOnExec(fd)
		// Tell baton this process reads its control channel: an upgrade offers it the
		// handoff and waits for its ACK; one that never said HELLO is told to stop at once.
		_, _ = unix.Write(fd, []byte("HELLO"))
		go func() {
			buf, oob := make([]byte, 64), make([]byte, unix.CmsgSpace(4))
			for {
				n, got, err := recvFds(fd, buf, oob)
				if err != nil || n == 0 {
					return // baton closed it: this process is no longer supervised as a generation
				}
				if string(buf[:n]) != "HANDOFF" {
					closeFds(got)
					continue
				}
				if len(got) == 1 {
					succMu.Lock()
					if successor >= 0 { // an earlier offer not taken: the latest one counts
						unix.Close(successor)
					}
					successor = got[0]
					succMu.Unlock()
					_, _ = unix.Write(fd, []byte("ACK"))
				} else {
					closeFds(got)
				}
			}
		}()
	})
}

// Sender sends live connections to the next version of the service.
type Sender struct {
	mu sync.Mutex
	fd int
}

// Successor returns the channel to the next version when an upgrade is handing over (baton
// offered it before the stop signal), or nil on a plain stop. Call Ready at startup, or no
// offer is ever seen.
func Successor() *Sender {
	succMu.Lock()
	defer succMu.Unlock()
	if successor < 0 {
		return nil
	}
	s := &Sender{fd: successor}
	successor = -1
	return s
}

// Send hands c, with state, to the next version and closes it here. The connection stays open
// in between: the kernel keeps it alive in flight, and no byte sent by the client is lost.
func (s *Sender) Send(c syscall.Conn, state []byte) error {
	if len(state) > MaxState {
		return fmt.Errorf("handoff: state of %d bytes exceeds %d", len(state), MaxState)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := withFd(c, func(fd int) error {
		// An empty datagram would read as end-of-stream: always send at least one byte.
		return unix.Sendmsg(s.fd, append([]byte{0}, state...), unix.UnixRights(fd), nil, unix.MSG_NOSIGNAL)
	})
	if err != nil {
		return fmt.Errorf("handoff: send: %w", err)
	}
	if cl, ok := c.(interface{ Close() error }); ok {
		cl.Close()
	}
	return nil
}

// Close ends the handoff: the next version sees the end of its Inherited channel.
func (s *Sender) Close() error { return unix.Close(s.fd) }

// Adopted is a connection received from the previous version.
type Adopted struct {
	Conn  net.Conn
	State []byte
}

// Inherited returns the connections the previous version hands over during an upgrade; the
// channel closes when it has sent them all (or at once when there is no previous version).
func Inherited() <-chan Adopted {
	ch := make(chan Adopted)
	fd, err := strconv.Atoi(os.Getenv("BATON_HANDOFF_FD"))
	if err != nil || fd < 3 {
		close(ch)
		return ch
	}
	os.Unsetenv("BATON_HANDOFF_FD")
	unix.CloseOnExec(fd)
	go func() {
		defer close(ch)
		defer unix.Close(fd)
		buf, oob := make([]byte, MaxState+1), make([]byte, unix.CmsgSpace(4*4))
		for {
			n, got, err := recvFds(fd, buf, oob)
			if err != nil || n == 0 {
				return
			}
			if len(got) != 1 {
				closeFds(got)
				continue
			}
			f := os.NewFile(uintptr(got[0]), "handoff")
			c, err := net.FileConn(f)
			f.Close()
			if err != nil {
				continue
			}
			ch <- Adopted{Conn: c, State: append([]byte(nil), buf[1:n]...)}
		}
	}()
	return ch
}

// recvFds receives one message and the fds it carries, close-on-exec from the start
// (MSG_CMSG_CLOEXEC): marking them afterwards would leave a moment in which a child this
// process starts inherits a connection or a channel it must not hold.
func recvFds(fd int, buf, oob []byte) (n int, fds []int, err error) {
	n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return 0, nil, err
	}
	return n, rightsFrom(oob[:oobn]), nil
}

func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

func rightsFrom(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}
