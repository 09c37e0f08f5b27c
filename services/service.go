// Package services supervises the appliance's programs: start in dependency order, readiness,
// restart by policy with backoff and a limit, held sockets and an fd store, upgrades without a
// refused connection, logs, and stop in reverse order within each service's stop timeout.
//
// Each service's state has one owner: its loop goroutine (loop.go). Everything that can change
// it — requests, process exits, notify datagrams, timers — reaches the loop as an input, and
// the loop decides by one table (table.go; upgrades by a second, upgrade.go). Callers wait for
// the reply outside the loop; status is a snapshot the loop publishes after every input.
package services

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/handoff"
	"github.com/baton-init/baton/system"
)

// State is where a service is in its lifecycle.
type State string

const (
	Stopped  State = "stopped"
	Starting State = "starting" // started, not ready yet; or waiting to restart
	Running  State = "running"  // ready
	Stopping State = "stopping"
	// Reloading: a notify service between its reload (RELOADING=1 or the reload signal) and
	// READY=1; it still serves.
	Reloading State = "reloading"
	Failed    State = "failed"
)

// env is what every service shares: the machine around it.
type env struct {
	log       *slog.Logger
	reaper    *system.Reaper
	console   *console // service output echo; nil for none
	notifyDir string   // where notify sockets go; "" for none
	cgroups   *Cgroups // nil: process groups only
	shim      string   // this binary, run as baton-exec to set LISTEN_PID
	journal   *Journal // the persistent journal; nil for none
}

// Service is one supervised program. The fields up to inputs are set once by newService and
// read-only after; st is touched by the loop goroutine only.
type Service struct {
	Logs *LogRing

	// specp is the service's config: replaced whole (never changed in place) when an upgrade
	// to another exec succeeds or a reloaded config changes it; read with spec().
	specp atomic.Pointer[config.Service]

	env     *env
	log     *slog.Logger
	stdout  *logPipe
	stderr  *logPipe
	notify  *handoff.NotifySocket // nil when the service may not use one
	held    []*handoff.Held       // sockets bound at boot, kept for good
	bindErr error                 // why a socket could not be bound: the service cannot start
	store   *handoff.FDStore
	carried carriedConns // connections a kexec carried, for the next start (carry.go)

	// notifyDone is closed when the notify reader returned (serialize.go); the loop reads it.
	notifyDone chan struct{}

	inputs   chan input    // everything that may change st
	quit     chan struct{} // closed by close: the loop and whoever posts to it stop
	loopDone chan struct{}
	snap     atomic.Pointer[snapshot]
	looping  bool // the loop was started (set before it runs, read-only after)

	st     state      // owned by the loop
	outbox []answered // replies to send after the next publish (loop only)
}

// snapshot is the status the loop published last; changed is closed when a newer one is out.
type snapshot struct {
	status  Status
	changed chan struct{}
}

func newService(spec config.Service, e *env) (*Service, error) {
	s := &Service{Logs: newLogRing(DefaultLogLines), env: e, log: e.log.With("service", spec.Name),
		inputs: make(chan input), quit: make(chan struct{}), loopDone: make(chan struct{})}
	s.specp.Store(&spec)
	s.st = newState(spec)
	if j := e.journal; j != nil {
		s.Logs.sink = func(l LogLine) { j.add(spec.Name, l) }
	}
	var err error
	if s.stdout, err = startLogPipe(spec.Name, "stdout", s.Logs, e.console); err != nil {
		return nil, err
	}
	if s.stderr, err = startLogPipe(spec.Name, "stderr", s.Logs, e.console); err != nil {
		s.stdout.close()
		return nil, err
	}
	// Sockets are bound now, before any service starts: early clients wait in the backlog.
	// One that cannot be bound fails this service only.
	for _, so := range spec.Socket {
		h, err := handoff.Bind(so)
		if err != nil {
			s.bindErr = err
			s.log.Error("socket not bound; the service will not start", "err", err)
			break
		}
		s.held = append(s.held, h)
	}
	if s.store, err = handoff.NewFDStore(spec.FDStoreMax, s.log); err != nil {
		s.close()
		return nil, err
	}
	// As systemd does, only a service that may speak the protocol gets a notify socket.
	if e.notifyDir != "" && usesNotify(spec) {
		n, err := handoff.ListenNotify(e.notifyDir+"/"+spec.Name, 0o666)
		if err != nil {
			s.close()
			return nil, err
		}
		s.notify = n
		s.startNotifyReader()
	}
	s.publish()
	s.looping = true
	go s.loop()
	return s, nil
}

// Spec returns the service's config as it is now.
func (s *Service) Spec() config.Service { return *s.specp.Load() }

func (s *Service) spec() *config.Service { return s.specp.Load() }

func usesNotify(spec config.Service) bool {
	return spec.Ready == config.ReadyNotify || spec.Watchdog.Duration > 0 || spec.FDStoreMax > 0
}

// post hands an input to the loop; false when the service is closed.
func (s *Service) post(in input) bool {
	select {
	case s.inputs <- in:
		return true
	case <-s.quit:
		return false
	}
}

// ErrClosed is the answer of a service whose supervisor was closed.
var ErrClosed = errors.New("supervisor closed")

// request posts a command and waits for the loop's answer: at once for what the loop can
// decide at once, or when the transition it started is over (ready, stopped, upgraded).
func (s *Service) request(r request) reply {
	ch := make(chan reply, 1)
	r.reply = ch
	if !s.post(r) {
		return reply{err: ErrClosed}
	}
	select {
	case rep := <-ch:
		return rep
	case <-s.loopDone:
		return reply{err: ErrClosed}
	}
}

// Status returns the latest snapshot. It never waits for the loop.
func (s *Service) Status() Status {
	st := s.snap.Load().status
	if st.Pid != 0 {
		st.Uptime = time.Since(st.Since).Round(time.Second).String()
	}
	return st
}

// WaitUntil blocks until ok(status) holds or timeout passes, and reports whether it held.
func (s *Service) WaitUntil(ok func(Status) bool, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		sn := s.snap.Load()
		if ok(sn.status) {
			return true
		}
		select {
		case <-sn.changed:
		case <-t.C:
			return ok(s.snap.Load().status)
		}
	}
}

// publish makes the loop's current state the snapshot readers see.
func (s *Service) publish() {
	next := &snapshot{status: s.statusNow(), changed: make(chan struct{})}
	if old := s.snap.Swap(next); old != nil {
		close(old.changed)
	}
}

// close ends the loop and releases what the service holds for good: sockets, store, notify
// socket, log pipes. Call it after the service stopped.
func (s *Service) close() error {
	select {
	case <-s.quit:
		return nil
	default:
	}
	close(s.quit)
	if s.looping {
		<-s.loopDone
	}
	var errs []error
	if s.notify != nil {
		errs = append(errs, s.notify.Close())
	}
	if s.store != nil {
		s.store.Close()
	}
	for _, h := range s.held {
		errs = append(errs, h.Close())
	}
	// Connections a kexec carried for a start that never came: closed, their peers see them
	// end (FIN, or a reset if unread bytes are queued), as they would without keep_connections.
	closeCarried(s.carried.take())
	// The readers end at EOF, once no process of the service holds the write ends either.
	s.stdout.close()
	s.stderr.close()
	return errors.Join(errs...)
}
