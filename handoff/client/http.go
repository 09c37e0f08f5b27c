package client

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// HTTPServer serves an http.Server on a (usually passed) listener and drains it without
// dropping a request: every connection this process accepted is answered before it exits.
//
// http.Server.Shutdown is not enough for that: a request read after Shutdown began is dropped
// with its connection closed unanswered. During an upgrade the listening socket stays open in
// baton and in the new version, so this process only has to stop accepting and finish what it
// took.
type HTTPServer struct {
	srv    *http.Server
	l      net.Listener
	served chan error

	mu     sync.Mutex
	active int           // connections accepted and not closed
	idle   chan struct{} // closed when active drops to 0 during a drain
	drain  bool
}

// ServeHTTP starts serving srv on l.
func ServeHTTP(srv *http.Server, l net.Listener) *HTTPServer {
	h := &HTTPServer{srv: srv, l: l, served: make(chan error, 1)}
	prev := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		h.track(st)
		if prev != nil {
			prev(c, st)
		}
	}
	go func() { h.served <- srv.Serve(withInherited(l)) }() // adopt.go
	return h
}

func (h *HTTPServer) track(st http.ConnState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch st {
	case http.StateNew:
		h.active++
	case http.StateClosed, http.StateHijacked:
		h.active--
		if h.drain && h.active == 0 && h.idle != nil {
			close(h.idle)
			h.idle = nil
		}
	}
}

// Done receives Serve's error if it stops on its own.
func (h *HTTPServer) Done() <-chan error { return h.served }

// Drain stops accepting, answers the requests of every connection already accepted (keep-alive
// is switched off, so each closes after its response; idle ones are closed, and clients retry
// those), and returns when all are closed or timeout passes.
func (h *HTTPServer) Drain(timeout time.Duration) error {
	h.l.Close()
	if err := <-h.served; err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	h.mu.Lock()
	h.drain = true
	idle := make(chan struct{})
	if h.active == 0 {
		close(idle)
	} else {
		h.idle = idle
	}
	h.mu.Unlock()
	h.srv.SetKeepAlivesEnabled(false) // also closes the connections idle right now
	select {
	case <-idle:
		return nil
	case <-time.After(timeout):
		h.mu.Lock()
		n := h.active
		h.mu.Unlock()
		return fmt.Errorf("drain: %d connections still open after %s", n, timeout)
	}
}
