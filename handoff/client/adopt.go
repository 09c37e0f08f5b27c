package client

import (
	"net"
	"os"
)

// withInherited returns l, or, when this process was started with connections to adopt
// ($BATON_HANDOFF_FD: an upgrade's previous version, or connections baton carried across a
// kexec), a listener whose Accept returns those too, so an HTTP server answers them like
// any other (their state blobs are not an HTTP server's business and are dropped).
func withInherited(l net.Listener) net.Listener {
	if os.Getenv("BATON_HANDOFF_FD") == "" {
		return l
	}
	m := &mergedListener{Listener: l, conns: make(chan net.Conn), errs: make(chan error, 1)}
	go func() {
		for a := range Inherited() {
			m.conns <- a.Conn
		}
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				m.errs <- err
				return
			}
			m.conns <- c
		}
	}()
	return m
}

// mergedListener accepts from its listener and from the inherited connections. The one
// goroutine accepting sends each connection before its final error, so nothing it accepted
// is left behind when Accept returns that error.
type mergedListener struct {
	net.Listener
	conns chan net.Conn
	errs  chan error
}

func (m *mergedListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case err := <-m.errs:
		return nil, err
	}
}
