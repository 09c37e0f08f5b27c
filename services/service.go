// Package services supervises the appliance's programs: start in dependency order, readiness,
// restart by policy with backoff and a limit, held sockets and an fd store, upgrades without a
// refused connection, logs, and stop in reverse order within each service's stop timeout.
package services

import (
	"errors"
	"io"
	"log/slog"
	"sync"
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
	Failed   State = "failed"
)

var errStopping = errors.New("service is stopping")

// env is what every service shares: the machine around it.
type env struct {
	log       *slog.Logger
	reaper    *system.Reaper
	console   io.Writer // service output echo; nil for none
	consoleMu *sync.Mutex
	notifyDir string   // where notify sockets go; "" for none
	cgroups   *Cgroups // nil: process groups only
	shim      string   // this binary, run as baton-exec to set LISTEN_PID
}

// activation is one period between a start and a stop; its run loop may restart the program
// many times.
type activation struct {
	stopReq bool
	done    chan struct{}
}

// generation is one running process of the service. There is one, except during an upgrade,
// when the new version runs beside the old one on the same sockets.
type generation struct {
	pid     int
	started time.Time
	done    chan struct{} // closed when reaped; exit is valid then
	exit    system.Exit
	ctl     int  // baton's end of the control channel with the process
	ready   bool // READY=1 seen (upgrades)
}

func (g *generation) ended() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// Service is one supervised program. One mutex guards the fields below it; cond is broadcast
// on every change, so callers wait for a state instead of polling. The run loop owns the
// current generation's lifecycle; Start, Stop and Upgrade go through ops.
type Service struct {
	Spec config.Service
	Logs *LogRing

	env     *env
	log     *slog.Logger
	stdout  *logPipe
	stderr  *logPipe
	notify  *handoff.NotifySocket
	held    []*handoff.Held // sockets bound at boot, kept for good
	bindErr error           // why a socket could not be bound: the service cannot start
	store   *handoff.FDStore
	ops     sync.Mutex    // serialises Start, Stop and Restart of this service
	poke    chan struct{} // wakes the run loop to look again (upgrade swap, new deadlines)

	mu            sync.Mutex
	cond          *sync.Cond
	state         State
	act           *activation
	cur           *generation // the main process, nil when none
	next          *generation // the new version during an upgrade
	upgrading     bool
	pid           int
	cgroup        string
	started       time.Time // of the current run
	readyAt       time.Time
	firstUp       time.Time // first start of this boot, for the timeline
	firstRdy      time.Time
	restarts      int
	upgrades      int
	failures      []time.Time // recent restarts, for the restart limit
	lastExit      *system.Exit
	lastErr       error
	statusMsg     string // the service's own STATUS=
	reloading     bool
	mainPid       int       // MAINPID= as the service reported it
	startDeadline time.Time // readiness deadline of the current run (notify)
	stopDeadline  time.Time // SIGKILL deadline of a stop in progress
	wdInterval    time.Duration
	wdDeadline    time.Time
	outcomes      int   // start attempts that ended in ready or failure
	outcome       error // the latest attempt's result
	runDecided    bool  // the current run's attempt has an outcome
	// notifyDropped counts notify datagrams refused: not from the service's processes.
	notifyDropped int
}

func newService(spec config.Service, e *env) (*Service, error) {
	s := &Service{Spec: spec, Logs: newLogRing(DefaultLogLines), env: e, log: e.log.With("service", spec.Name),
		state: Stopped, poke: make(chan struct{}, 1), wdInterval: spec.Watchdog.Duration}
	s.cond = sync.NewCond(&s.mu)
	var err error
	if s.stdout, err = startLogPipe(spec.Name, "stdout", s.Logs, e.console, e.consoleMu); err != nil {
		return nil, err
	}
	if s.stderr, err = startLogPipe(spec.Name, "stderr", s.Logs, e.console, e.consoleMu); err != nil {
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
		return nil, err
	}
	if e.notifyDir != "" {
		n, err := handoff.ListenNotify(e.notifyDir+"/"+spec.Name, 0o666)
		if err != nil {
			return nil, err
		}
		s.notify = n
		go s.readNotify()
	}
	return s, nil
}

func (s *Service) setState(st State) {
	s.state = st
	s.cond.Broadcast()
}

// wake makes the run loop re-read the service's state.
func (s *Service) wake() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// recordOutcome ends a start attempt: nil when ready, else why it failed.
func (s *Service) recordOutcome(err error) {
	s.runDecided = true
	s.outcomes++
	s.outcome = err
	s.cond.Broadcast()
}

func (s *Service) markReadyLocked() {
	s.readyAt = time.Now()
	if s.firstRdy.IsZero() {
		s.firstRdy = s.readyAt
	}
	s.setState(Running)
	s.recordOutcome(nil)
}

// waitLocked waits on the condition variable until done holds or deadline passes, and reports
// whether done held. s.mu must be held.
func (s *Service) waitLocked(deadline time.Time, done func() bool) bool {
	t := time.AfterFunc(time.Until(deadline), func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer t.Stop()
	for !done() {
		if !time.Now().Before(deadline) {
			return false
		}
		s.cond.Wait()
	}
	return true
}

// WaitUntil blocks until ok(status) holds or timeout passes, and reports whether it held.
func (s *Service) WaitUntil(ok func(Status) bool, timeout time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waitLocked(time.Now().Add(timeout), func() bool { return ok(s.statusLocked()) })
}

// close releases what the service holds for good: sockets, store, notify socket.
func (s *Service) close() error {
	var errs []error
	if s.notify != nil {
		errs = append(errs, s.notify.Close())
	}
	s.store.Close()
	for _, h := range s.held {
		errs = append(errs, h.Close())
	}
	return errors.Join(errs...)
}
