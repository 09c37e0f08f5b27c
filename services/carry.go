package services

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/system"
)

// Carrying connections across a kexec (keep_connections) reuses the upgrade's handoff
// protocol with baton itself as the next version: before the shutdown baton offers the
// running service a handoff channel whose other end it keeps; stopped, the service sends its
// live connections with their state blobs there, as it would to a new version. In the next
// boot baton gives the rebuilt connections to the service it starts, on $BATON_HANDOFF_FD,
// as to a new version, so the service adopts them with handoff/client's Inherited.

// Carried is one live connection and the service's state blob for it.
type Carried struct {
	Fd    int
	State []byte
}

// carriedConns are the connections the next start of the service inherits.
type carriedConns struct {
	mu    sync.Mutex
	conns []Carried
}

// maxCarryState is handoff/client's MaxState: the largest blob a service sends with a connection.
const maxCarryState = 60 << 10

type carryOffer struct{ reply chan carryAnswer }

type carryAnswer struct {
	end, ctl int // baton's end of the handoff channel; a copy of the control channel
	err      error
}

func (carryOffer) isInput() {}

// onCarryOffer runs in the loop: it offers the running generation a handoff channel.
func (s *Service) onCarryOffer(in carryOffer) {
	g := s.st.cur
	if g == nil || s.st.phase != pRunning || s.st.up != nil {
		in.reply <- carryAnswer{err: fmt.Errorf("not running (%s)", s.st.phase)}
		return
	}
	if !saidHello(g.ctl) {
		in.reply <- carryAnswer{err: errors.New("it never opened its control channel (not a program of handoff/client): nothing would hand its connections over")}
		return
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		in.reply <- carryAnswer{err: fmt.Errorf("handoff channel: %w", err)}
		return
	}
	err = unix.Sendmsg(g.ctl, []byte(ctlHandoff), unix.UnixRights(pair[1]), nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
	unix.Close(pair[1])
	if err != nil {
		unix.Close(pair[0])
		in.reply <- carryAnswer{err: fmt.Errorf("offer the handoff channel: %w", err)}
		return
	}
	ctl, err := unix.FcntlInt(uintptr(g.ctl), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		unix.Close(pair[0])
		in.reply <- carryAnswer{err: fmt.Errorf("control channel: %w", err)}
		return
	}
	in.reply <- carryAnswer{end: pair[0], ctl: ctl}
}

// A Collector gathers the connections a service hands over after OfferCarry.
type Collector struct {
	Service string
	done    chan struct{}
	conns   []Carried
	err     error
}

// OfferCarry offers the named running service the handoff channel and waits (ackTimeout)
// for its acknowledgement; the service sends its connections there once it is stopped.
func (sv *Supervisor) OfferCarry(name string) (*Collector, error) {
	s, ok := sv.lookup(name)
	if !ok {
		return nil, unknown(name)
	}
	ch := make(chan carryAnswer, 1)
	if !s.post(carryOffer{reply: ch}) {
		return nil, ErrClosed
	}
	var a carryAnswer
	select {
	case a = <-ch:
	case <-s.loopDone:
		return nil, ErrClosed
	}
	if a.err != nil {
		return nil, a.err
	}
	ok = false
	pfd := []unix.PollFd{{Fd: int32(a.ctl), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, int(ackTimeout.Milliseconds())); err == nil && n > 0 {
		buf := make([]byte, 16)
		n, _, err := unix.Recvfrom(a.ctl, buf, unix.MSG_DONTWAIT)
		ok = err == nil && string(buf[:n]) == ctlAck
	}
	unix.Close(a.ctl)
	if !ok {
		unix.Close(a.end)
		return nil, fmt.Errorf("no ACK to the handoff offer within %s", ackTimeout)
	}
	c := &Collector{Service: name, done: make(chan struct{})}
	go c.read(s, a.end)
	return c, nil
}

// read takes messages (one connection each: its fd and a byte then the state blob) until
// the service closes its end, or exits.
func (c *Collector) read(s *Service, fd int) {
	defer close(c.done)
	defer unix.Close(fd)
	defer system.Recover(s.log, "carry "+c.Service)
	buf, oob := make([]byte, maxCarryState+1), make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != nil || n == 0 {
			if err != nil && !errors.Is(err, unix.ECONNRESET) {
				c.err = err
			}
			return
		}
		fds := rightsOf(oob[:oobn])
		if len(fds) != 1 {
			for _, f := range fds {
				unix.Close(f)
			}
			continue
		}
		c.conns = append(c.conns, Carried{Fd: fds[0], State: append([]byte(nil), buf[1:n]...)})
	}
}

// Wait returns what the service handed over, once it closed the channel or exited, or when
// timeout passes (what came so far; the rest is lost).
func (c *Collector) Wait(timeout time.Duration) ([]Carried, error) {
	select {
	case <-c.done:
		return c.conns, c.err
	case <-time.After(timeout):
		return nil, fmt.Errorf("the handoff channel was still open after %s", timeout)
	}
}

func rightsOf(oob []byte) []int {
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

// Inherit gives conns to the next start of the named service, as an upgrade's previous
// version would (a start that has them is the service's next run).
func (sv *Supervisor) Inherit(name string, conns []Carried) error {
	s, ok := sv.lookup(name)
	if !ok {
		return unknown(name)
	}
	s.carried.mu.Lock()
	s.carried.conns = append(s.carried.conns, conns...)
	s.carried.mu.Unlock()
	return nil
}

// carriedChannel returns the receiving end of a handoff channel holding the connections the
// service inherits (baton's goroutine writes them and closes its end), or -1 when there are
// none.
func (s *Service) carriedChannel() int {
	conns := s.carried.take()
	if len(conns) == 0 {
		return -1
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		s.log.Error("carried connections lost: no handoff channel", "count", len(conns), "err", err)
		closeCarried(conns)
		return -1
	}
	go func() {
		defer system.Recover(s.log, "inherit "+s.spec().Name)
		defer unix.Close(pair[0])
		sent := 0
		for i, c := range conns {
			// Blocks while the channel is full: the service reads as it adopts.
			err := unix.Sendmsg(pair[0], append([]byte{0}, c.State...), unix.UnixRights(c.Fd), nil, unix.MSG_NOSIGNAL)
			unix.Close(c.Fd)
			if err != nil {
				s.log.Error("carried connections lost: the service did not take them", "lost", len(conns)-i, "err", err)
				closeCarried(conns[i+1:])
				return
			}
			sent++
		}
		s.log.Info("carried connections handed to the service", "count", sent)
	}()
	return pair[1]
}

// take removes and returns the connections waiting for the service's start.
func (c *carriedConns) take() []Carried {
	c.mu.Lock()
	defer c.mu.Unlock()
	conns := c.conns
	c.conns = nil
	return conns
}

func closeCarried(conns []Carried) {
	for _, c := range conns {
		unix.Close(c.Fd)
	}
}

// ListeningTCP returns the held TCP listening sockets of the named service (fds baton keeps
// holding; not to be closed).
func (sv *Supervisor) ListeningTCP(name string) []int {
	s, ok := sv.lookup(name)
	if !ok {
		return nil
	}
	var fds []int
	for _, h := range s.held {
		if n := h.Listen.Network; n == "tcp" || n == "tcp4" || n == "tcp6" {
			fds = append(fds, h.Fd)
		}
	}
	return fds
}
