package control

import (
	"errors"
	"io"
	"net"
	"net/http"
	"time"
)

// retryAccept keeps a listener accepting through EMFILE and other temporary errors: it waits
// (5 ms doubling to 1 s, as net/http does) and logs one warning per period, where net/http
// would log a line per failure.
type retryAccept struct {
	net.Listener
	warn *rateLog
}

func (l *retryAccept) Accept() (net.Conn, error) {
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil || errors.Is(err, net.ErrClosed) {
			return c, err
		}
		if !isTemporary(err) { // EMFILE, ENFILE, ENOBUFS, ECONNABORTED are
			return nil, err
		}
		l.warn.Warn("accept", "control API: accept failed", "err", err)
		backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
		time.Sleep(backoff)
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

// DefaultBodyIdle and DefaultMaxFollows are Server's defaults.
const (
	DefaultBodyIdle   = 10 * time.Second
	DefaultMaxFollows = 32
)

// bodyDeadline gives every request body a read deadline that moves forward with each read
// that returns data: a client that trickles a body (or sends none after its headers) is cut
// off after BodyIdle without progress, while a large upload that keeps moving never is. The
// server has no ReadTimeout because that would bound the whole body, and logs?follow=1.
func (s *Server) bodyDeadline(next http.Handler) http.Handler {
	idle := s.BodyIdle
	if idle <= 0 {
		idle = DefaultBodyIdle
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if rc.SetReadDeadline(time.Now().Add(idle)) == nil {
			r.Body = &progressBody{ReadCloser: r.Body, rc: rc, idle: idle}
		}
		next.ServeHTTP(w, r)
	})
}

type progressBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
}

func (b *progressBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	}
	return n, err
}

// followSlot takes one of MaxFollows log streams, or reports that all are taken.
func (s *Server) followSlot() (release func(), ok bool) {
	max := s.MaxFollows
	if max <= 0 {
		max = DefaultMaxFollows
	}
	if s.follows.Add(1) > int64(max) {
		s.follows.Add(-1)
		return nil, false
	}
	return func() { s.follows.Add(-1) }, true
}
