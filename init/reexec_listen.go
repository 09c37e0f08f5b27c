package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/handoff"
)

// The control API's listeners across a re-exec: the old image stops accepting (connections
// wait in the kernel's queue) and hands the listening sockets over; the new one serves them
// from where the old one stopped, so initctl never finds the socket missing or refused.

// gated is a listener whose Accept a re-exec can park.
type gated struct {
	net.Listener
	mu     sync.Mutex
	parked bool
	resume chan struct{}
}

type deadliner interface{ SetDeadline(time.Time) error }

func (g *gated) Accept() (net.Conn, error) {
	for {
		g.mu.Lock()
		parked, resume := g.parked, g.resume
		g.mu.Unlock()
		if parked {
			<-resume
			continue
		}
		c, err := g.Listener.Accept()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue // parked meanwhile
		}
		return c, err
	}
}

// park stops accepting: a pending Accept returns at its deadline and waits for unpark.
func (g *gated) park() {
	g.mu.Lock()
	g.parked, g.resume = true, make(chan struct{})
	g.mu.Unlock()
	if d, ok := g.Listener.(deadliner); ok {
		_ = d.SetDeadline(time.Unix(1, 0))
	}
}

func (g *gated) unpark() {
	if d, ok := g.Listener.(deadliner); ok {
		_ = d.SetDeadline(time.Time{})
	}
	g.mu.Lock()
	if g.parked {
		g.parked = false
		close(g.resume)
	}
	g.mu.Unlock()
}

// dupForExec is a copy of the listening socket that survives execve.
func (g *gated) dupForExec() (int, error) {
	sc, ok := g.Listener.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("control listener %s: no raw fd", g.Addr())
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(u uintptr) { fd, derr = handoff.DupForExec(int(u)) }); err != nil {
		return -1, err
	}
	return fd, derr
}

// ctlHandover holds this image's control listeners and those a previous image handed over.
type ctlHandover struct {
	mu            sync.Mutex
	local, remote *gated
	inLocal       int // from the previous image; -1 for none
	inRemote      int
}

var handover = &ctlHandover{inLocal: -1, inRemote: -1}

// fromFd takes over a listening socket (a duplicate; the fd itself is closed by release).
func fromFd(fd int, what string) (net.Listener, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("%s listener (fd %d): %w", what, fd, err)
	}
	f := os.NewFile(uintptr(dup), what)
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("%s listener (fd %d): %w", what, fd, err)
	}
	return l, nil
}

// localListener is the local control socket: the one handed over, or a new one at sock.
func (h *ctlHandover) localListener(sock string) (net.Listener, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var l net.Listener
	var err error
	if h.inLocal >= 0 {
		l, err = fromFd(h.inLocal, "control")
		unix.Close(h.inLocal)
		h.inLocal = -1
	} else {
		l, err = control.ListenLocal(sock)
	}
	if err != nil {
		return nil, err
	}
	h.local = &gated{Listener: l}
	return h.local, nil
}

// serveRemote serves the remote API on the listener handed over, or a new one.
func (h *ctlHandover) serveRemote(srv *control.Server, cfg *config.Config) (net.Listener, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var raw net.Listener
	var err error
	if h.inRemote >= 0 {
		raw, err = fromFd(h.inRemote, "remote control")
		unix.Close(h.inRemote)
		h.inRemote = -1
	} else {
		raw, err = net.Listen("tcp", cfg.Control.Remote)
	}
	if err != nil {
		return nil, fmt.Errorf("control remote %s: %w", cfg.Control.Remote, err)
	}
	g := &gated{Listener: raw}
	l, err := srv.ServeRemoteOn(g, cfg.Control.TLSDir)
	if err != nil {
		raw.Close()
		return nil, err
	}
	h.remote = g
	return l, nil
}

// park stops both listeners and returns copies for the next image (-1 for none).
func (h *ctlHandover) park() (local, remote int, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	local, remote = -1, -1
	for _, x := range []struct {
		g  *gated
		fd *int
	}{{h.local, &local}, {h.remote, &remote}} {
		if x.g == nil {
			continue
		}
		x.g.park()
		if *x.fd, err = x.g.dupForExec(); err != nil {
			break
		}
	}
	if err != nil {
		h.unparkLocked(local, remote)
	}
	return local, remote, err
}

func (h *ctlHandover) unpark(local, remote int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unparkLocked(local, remote)
}

func (h *ctlHandover) unparkLocked(local, remote int) {
	for _, fd := range []int{local, remote} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	for _, g := range []*gated{h.local, h.remote} {
		if g != nil {
			g.unpark()
		}
	}
}

// release closes what the previous image handed over and this one did not take (a listener
// its config no longer has).
func (h *ctlHandover) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, fd := range []*int{&h.inLocal, &h.inRemote} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}
