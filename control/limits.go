package control

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/system"
)

// RemoteLimits bound what the remote API may cost PID 1. Without them ~4,300 TCP connections
// that never sent a byte took every fd baton had: the local API stopped answering and a
// service that crashed meanwhile could not be restarted (no fd for /dev/null).
type RemoteLimits struct {
	MaxHandshakes    int           // connections that have not completed the TLS handshake
	MaxConnections   int           // remote connections in all
	HandshakeTimeout time.Duration // a client that has not finished its handshake by then is dropped
	// FDReserve is how many fds below RLIMIT_NOFILE stay for supervising (services' pipes,
	// held sockets, the local API): no remote connection is accepted into them.
	FDReserve int
}

// Defaults of RemoteLimits; config [control] max_handshakes and max_connections override the
// first two.
const (
	DefaultMaxHandshakes    = 64
	DefaultMaxConnections   = 256
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultFDReserve        = 256
)

func (l RemoteLimits) withDefaults() RemoteLimits {
	if l.MaxHandshakes <= 0 {
		l.MaxHandshakes = DefaultMaxHandshakes
	}
	if l.MaxConnections <= 0 {
		l.MaxConnections = DefaultMaxConnections
	}
	if l.HandshakeTimeout <= 0 {
		l.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if l.FDReserve <= 0 {
		l.FDReserve = DefaultFDReserve
	}
	return l
}

// remoteListener accepts TCP connections itself and hands net/http only those that completed
// the TLS handshake. Accepting in our own loop is what lets baton refuse a connection before it
// costs more than one fd for a moment, time its handshake, and log accept errors at warning
// level without a line per failure.
type remoteListener struct {
	raw   net.Listener
	tls   *tls.Config
	lim   RemoteLimits
	warn  *rateLog
	ready chan net.Conn // handshaken
	// entropy reports whether getrandom(2) would answer without blocking.
	entropy func() bool
	done    chan struct{}
	once    sync.Once

	handshaking atomic.Int64
	open        atomic.Int64
}

func newRemoteListener(raw net.Listener, cfg *tls.Config, lim RemoteLimits, log *slog.Logger) *remoteListener {
	l := &remoteListener{raw: raw, tls: cfg, lim: lim.withDefaults(), warn: newRateLog(log, 10*time.Second),
		ready: make(chan net.Conn), done: make(chan struct{}), entropy: entropyReady}
	go func() {
		defer system.Recover(log, "control remote accept")
		l.acceptLoop()
	}()
	return l
}

func (l *remoteListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *remoteListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.raw.Close()
}

func (l *remoteListener) Addr() net.Addr { return l.raw.Addr() }

func (l *remoteListener) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := l.raw.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: the connection stays in the kernel's queue; wait and retry
			// (as net/http does), with one warning per period instead of one per failure.
			l.warn.Warn("accept", "remote control API: accept failed", "err", err)
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
			case <-l.done:
				return
			}
			continue
		}
		backoff = 0
		if reason := l.admit(); reason != "" {
			c.Close()
			l.warn.Warn("refused", "remote control API: connection refused", "reason", reason, "peer", c.RemoteAddr().String())
			continue
		}
		go l.handshake(c)
	}
}

// admit reserves room for one more connection and its handshake, or says why there is none.
func (l *remoteListener) admit() string {
	if n := l.open.Add(1); n > int64(l.lim.MaxConnections) {
		l.open.Add(-1)
		return fmt.Sprintf("%d remote connections open (max_connections)", l.lim.MaxConnections)
	}
	if n := l.handshaking.Add(1); n > int64(l.lim.MaxHandshakes) {
		l.handshaking.Add(-1)
		l.open.Add(-1)
		return fmt.Sprintf("%d TLS handshakes in progress (max_handshakes)", l.lim.MaxHandshakes)
	}
	if open, limit, err := system.FDUsage(); err == nil && open+l.lim.FDReserve > limit {
		l.handshaking.Add(-1)
		l.open.Add(-1)
		return fmt.Sprintf("%d of %d fds in use; the last %d are kept for supervising", open, limit, l.lim.FDReserve)
	}
	return ""
}

func (l *remoteListener) handshake(raw net.Conn) {
	c := &countedConn{Conn: raw, open: &l.open}
	defer l.handshaking.Add(-1)
	if !l.entropy() {
		// crypto/rand would block in getrandom(2) until the kernel's pool is initialised —
		// ~15 s of guest time under QEMU without virtio-rng — with the client left hanging.
		// Refuse now with a TLS alert the client can report instead.
		_, _ = c.Write(tlsAlertInternalError)
		c.Close()
		l.warn.Warn("entropy", "remote control API: TLS handshake refused: entropy not ready (the kernel's random pool is not initialised; give the machine virtio-rng or a CPU with RDRAND)")
		return
	}
	tc := tls.Server(c, l.tls)
	ctx, cancel := context.WithTimeout(context.Background(), l.lim.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		tc.Close()
		return // scanners and clients without a certificate: not worth a line each
	}
	select {
	case l.ready <- tc:
	case <-l.done:
		tc.Close()
	}
}

// tlsAlertInternalError is a plaintext TLS record: fatal alert 80 (internal_error). Go's client
// reports it as "remote error: tls: internal error"; initctl adds what it means here.
var tlsAlertInternalError = []byte{21, 3, 3, 0, 2, 2, 80}

var entropyOK atomic.Bool

// entropyReady reports whether getrandom(2) would answer without blocking (a variable: tests
// play a machine whose pool is not ready).
var entropyReady = getrandomReady

func getrandomReady() bool {
	if entropyOK.Load() {
		return true
	}
	var b [1]byte
	if _, err := unix.Getrandom(b[:], unix.GRND_NONBLOCK); err != nil {
		return false
	}
	entropyOK.Store(true)
	return true
}

// countedConn gives its slot back when closed, once.
type countedConn struct {
	net.Conn
	open *atomic.Int64
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}

// rateLog writes the first warning of a kind, then at most one per period with the count of
// those it held back: "… and 9,990 more in the last 10s".
type rateLog struct {
	log    *slog.Logger
	period time.Duration
	mu     sync.Mutex
	kinds  map[string]*rateKind
}

type rateKind struct {
	last       time.Time
	suppressed int
	flush      *time.Timer
}

func newRateLog(log *slog.Logger, period time.Duration) *rateLog {
	return &rateLog{log: log, period: period, kinds: map[string]*rateKind{}}
}

// Warn logs msg with args unless one of kind was logged less than a period ago.
func (r *rateLog) Warn(kind, msg string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := r.kinds[kind]
	if k == nil {
		k = &rateKind{}
		r.kinds[kind] = k
	}
	now := time.Now()
	if now.Sub(k.last) < r.period {
		k.suppressed++
		if k.flush == nil {
			// The count is told even if no other warning of the kind ever comes.
			k.flush = time.AfterFunc(r.period-now.Sub(k.last), func() { r.flush(kind, msg) })
		}
		return
	}
	k.last = now
	r.log.Warn(msg, args...)
}

func (r *rateLog) flush(kind, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := r.kinds[kind]
	k.flush = nil
	if k.suppressed > 0 {
		r.log.Warn(fmt.Sprintf("%s: and %d more in the last %s", msg, k.suppressed, r.period))
		k.suppressed = 0
		k.last = time.Now()
	}
}
