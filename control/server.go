package control

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/system"
	"github.com/baton-init/baton/update"
)

// Server answers the control API.
type Server struct {
	SV  *services.Supervisor
	Log *slog.Logger
	// Power performs reboot, poweroff or halt; nil outside PID 1, where they are refused.
	Power func(system.PowerAction) error
	// Timeline returns the boot timeline.
	Timeline func() Timeline
	// Kexec loads a kernel and, unless asked only to load, starts the shutdown that jumps into
	// it; nil outside PID 1.
	Kexec func(KexecRequest) (KexecResult, error)
	// ReloadConfig reads the config file again and applies it; an error means it was not
	// applied (nothing changed).
	ReloadConfig func() (services.ReloadReport, error)
	// ConfigFile is the config's path, for initctl cat ("" for none).
	ConfigFile string
	// Update returns what receives and applies new images: nil where updates are not
	// possible, or not yet (PID 1 serves the API before /boot is mounted).
	Update func() *update.Updater
	// Reexec replaces baton with a new version of itself (reexec.go); nil: not available.
	Reexec Reexecer
	// Remote bounds the remote API's connections (zero fields: the defaults).
	Remote RemoteLimits
	// BodyIdle is how long a request body may make no progress (default 10 s).
	BodyIdle time.Duration
	// MaxFollows bounds concurrent logs?follow=1 streams (default 32).
	MaxFollows int

	follows atomic.Int64
}

type peerKey struct{}

// peer is who is on the other end of a connection.
type peer struct {
	uid    int
	pid    int
	remote bool // authenticated by a client certificate
}

// Handler returns the API's routes, with the peer check in front.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/services", s.list)
	mux.HandleFunc("GET /v1/services/{name}", s.get)
	mux.HandleFunc("POST /v1/services/{name}/{action}", s.action)
	mux.HandleFunc("GET /v1/services/{name}/logs", s.logs)
	mux.HandleFunc("GET /v1/services/{name}/config", s.serviceConfig)
	mux.HandleFunc("GET /v1/services/{name}/unit", s.serviceUnit)
	mux.HandleFunc("POST /v1/system/{action}", s.power)
	mux.HandleFunc("POST /v1/system/kexec", s.kexec)
	mux.HandleFunc("GET /v1/boot", s.boot)
	mux.HandleFunc("GET /metrics", s.metrics)
	mux.HandleFunc("POST /v1/reload-config", s.reloadConfig)
	s.updateRoutes(mux)
	s.reexecRoutes(mux)
	s.statusRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})
	return s.contain(s.bodyDeadline(s.authorize(mux)))
}

// contain answers 500 to a request whose handler panicked and logs the panic with its stack,
// at error level and to the kernel log. net/http would recover it as well, but report it only
// to ErrorLog (at debug level for the remote API) and leave the client without an answer.
func (s *Server) contain(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			if p == http.ErrAbortHandler { // net/http's way to drop a connection on purpose
				panic(p)
			}
			system.LogPanic(s.Log, "control API "+r.Method+" "+r.URL.Path, p)
			writeError(w, http.StatusInternalServerError, fmt.Sprintf("internal error in baton (logged): %v", p))
		}()
		next.ServeHTTP(w, r)
	})
}

// authorize lets through root on the local socket (and the server's own user, for the
// subreaper run by a developer) and any client whose certificate the CA signed.
func (s *Server) authorize(next http.Handler) http.Handler {
	self := os.Getuid()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := r.Context().Value(peerKey{}).(peer)
		if !p.remote && p.uid != 0 && p.uid != self {
			s.Log.Warn("control: refused a peer that is not root", "uid", p.uid, "pid", p.pid)
			writeError(w, http.StatusForbidden, fmt.Sprintf("not permitted: uid %d is not root", p.uid))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ListenLocal creates the local socket at path (replacing a stale one), mode 0600.
func ListenLocal(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket %s: remove stale: %w", path, err)
	}
	// The mode is set by umask at bind time, so no moment exists where others may connect.
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return l, nil
}

// ServeLocal serves the API on a unix listener until it is closed; each connection carries
// its peer's credentials (SO_PEERCRED) to the handlers.
func (s *Server) ServeLocal(l net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, peerCred(c))
		},
		ErrorLog: slog.NewLogLogger(s.Log.Handler(), slog.LevelWarn),
	}
	err := srv.Serve(&retryAccept{Listener: l, warn: newRateLog(s.Log, 10*time.Second)})
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// peerCred reads SO_PEERCRED; an unreadable peer gets uid -1 and is refused.
func peerCred(c net.Conn) peer {
	p := peer{uid: -1}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return p
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return p
	}
	_ = raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			p.uid, p.pid = int(cred.Uid), int(cred.Pid)
		}
	})
	return p
}

// ServeRemote serves the same API over TCP with mutual TLS: a client without a certificate
// signed by the CA in tlsDir completes no handshake, so nothing is served to it.
func (s *Server) ServeRemote(addr, tlsDir string) (net.Listener, error) {
	cfg, err := ServerTLS(tlsDir)
	if err != nil {
		return nil, err
	}
	raw, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("control remote %s: %w", addr, err)
	}
	return s.serveRemote(raw, cfg), nil
}

// ServeRemoteOn is ServeRemote on a TCP listener already open (one a re-exec handed over).
func (s *Server) ServeRemoteOn(raw net.Listener, tlsDir string) (net.Listener, error) {
	cfg, err := ServerTLS(tlsDir)
	if err != nil {
		return nil, err
	}
	return s.serveRemote(raw, cfg), nil
}

func (s *Server) serveRemote(raw net.Listener, cfg *tls.Config) net.Listener {
	l := newRemoteListener(raw, cfg, s.Remote, s.Log)
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute, // an idle keep-alive connection holds one of max_connections
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, peer{remote: true})
		},
		ErrorLog: slog.NewLogLogger(s.Log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer system.Recover(s.Log, "control remote")
		_ = srv.Serve(l)
	}()
	return l
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, ServiceList{Services: s.SV.Statuses()})
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	svc := s.service(w, r)
	if svc == nil {
		return
	}
	writeJSON(w, http.StatusOK, svc.Status())
}

func (s *Server) service(w http.ResponseWriter, r *http.Request) *services.Service {
	name := r.PathValue("name")
	svc := s.SV.Service(name)
	if svc == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown service %q", name))
	}
	return svc
}

func (s *Server) action(w http.ResponseWriter, r *http.Request) {
	svc := s.service(w, r)
	if svc == nil {
		return
	}
	name, action := r.PathValue("name"), r.PathValue("action")
	start := time.Now()
	var err error
	var killed, also []string
	switch action {
	case "start":
		err = s.SV.Start(name)
	case "stop":
		var res services.StopResult
		res, err = s.SV.StopReport(name)
		killed, also = res.Killed, res.Also
	case "restart":
		err = s.SV.Restart(name)
	case "reload":
		err = s.SV.ReloadService(name)
	case "kill":
		err = s.killAction(r, name)
	case "upgrade":
		var rep services.UpgradeReport
		rep, err = s.SV.Upgrade(name, r.URL.Query().Get("exec"))
		if err == nil {
			st := svc.Status()
			writeJSON(w, http.StatusOK, ActionResult{Service: name, Action: action, Took: time.Since(start).Round(time.Millisecond).String(), Status: &st, Upgrade: &rep})
			s.Log.Info("control: upgrade", "service", name, "old_pid", rep.OldPid, "new_pid", rep.NewPid, "took", time.Since(start))
			return
		}
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown action %q (start, stop, restart, reload, kill or upgrade)", action))
		return
	}
	s.Log.Info("control: service action", "service", name, "action", action, "took", time.Since(start), "err", err)
	st := svc.Status()
	if err != nil {
		writeError(w, actionCode(err), fmt.Sprintf("%s %s: %v", action, name, err))
		return
	}
	writeJSON(w, http.StatusOK, ActionResult{Service: name, Action: action, Took: time.Since(start).Round(time.Millisecond).String(), Killed: killed, AlsoStopped: also, Status: &st})
}

// logs writes the last n lines as JSON; with follow=1 it then streams new lines as JSON lines
// until the client goes away.
func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	svc := s.service(w, r)
	if svc == nil {
		return
	}
	n := 100
	if v := r.URL.Query().Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("n=%q: want a number of lines ≥ 0 (0: all kept)", v))
			return
		}
	}
	follow := r.URL.Query().Get("follow")
	if follow != "" && follow != "0" && follow != "1" {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("follow=%q: want 0 or 1", follow))
		return
	}
	lines := svc.Logs.Tail(n)
	if follow != "1" {
		if lines == nil {
			lines = []services.LogLine{} // [] for no lines, as for any list; not null
		}
		writeJSON(w, http.StatusOK, lines)
		return
	}
	release, ok := s.followSlot()
	if !ok {
		writeError(w, http.StatusServiceUnavailable, "too many logs --follow streams open; close one or retry later")
		return
	}
	defer release()
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	var last uint64
	flusher, _ := w.(http.Flusher)
	for {
		for _, l := range lines {
			if err := enc.Encode(l); err != nil {
				return
			}
			last = l.Seq
		}
		if flusher != nil {
			flusher.Flush()
		}
		var changed <-chan struct{}
		lines, changed = svc.Logs.Since(last)
		if len(lines) > 0 {
			continue
		}
		select {
		case <-changed:
			lines, _ = svc.Logs.Since(last)
		case <-r.Context().Done():
			return
		}
	}
}

func (s *Server) power(w http.ResponseWriter, r *http.Request) {
	var a system.PowerAction
	switch r.PathValue("action") {
	case "reboot":
		a = system.Reboot
	case "poweroff":
		a = system.Poweroff
	case "halt":
		a = system.Halt
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown system action %q (reboot, poweroff or halt)", r.PathValue("action")))
		return
	}
	if s.Power == nil {
		writeError(w, http.StatusConflict, fmt.Sprintf("%s: baton is not PID 1 here (subreaper mode); it does not power the machine", a))
		return
	}
	if err := s.Power(a); err != nil {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, ActionResult{Action: a.String(), Took: "0s"})
}

func (s *Server) kexec(w http.ResponseWriter, r *http.Request) {
	var req KexecRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("kexec request: %v", err))
		return
	}
	if req.Cmdline != "" && (req.Append != "" || req.ReuseCmdline) {
		writeError(w, http.StatusBadRequest, "kexec request: cmdline replaces the command line; it does not go with append or reuse_cmdline")
		return
	}
	if s.Kexec == nil {
		writeError(w, http.StatusConflict, "kexec: baton is not PID 1 here (subreaper mode); it does not reboot the machine")
		return
	}
	res, err := s.Kexec(req)
	if err != nil {
		s.Log.Error("control: kexec refused", "err", err)
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	code := http.StatusOK
	if res.Jumping {
		code = http.StatusAccepted
	}
	writeJSON(w, code, res)
}

func (s *Server) boot(w http.ResponseWriter, r *http.Request) {
	if s.Timeline == nil {
		writeJSON(w, http.StatusOK, Timeline{})
		return
	}
	writeJSON(w, http.StatusOK, s.Timeline())
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorResponse{Error: msg})
}
