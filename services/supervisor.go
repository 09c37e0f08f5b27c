package services

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/handoff/execshim"
	"github.com/baton-init/baton/system"
)

// Options is what a supervisor needs from its surroundings.
type Options struct {
	Log     *slog.Logger
	Reaper  *system.Reaper
	Console io.Writer // each line a service writes is echoed here, prefixed with its name
	RunDir  string    // notify sockets go to RunDir/notify; "" for none
	Cgroups *Cgroups  // nil: process groups only
	// Shim is the binary that, run as "baton-exec", sets LISTEN_PID and execs a service;
	// default: this program (the init binary dispatches on that name).
	Shim string
	// Journal is where services' lines are also written (journal.go); nil: the config's
	// [log] dir, if set, opened by New and closed by Close.
	Journal *Journal
}

// Supervisor runs a set of services. The set is replaced whole when a reloaded config adds or
// removes services (reload.go), so readers never see it half changed.
type Supervisor struct {
	log      *slog.Logger
	env      *env
	set      atomic.Pointer[serviceSet]
	reloadMu sync.Mutex // one reload at a time
	console  *console
	journal  *Journal
	ownsJrnl bool // opened by New: Close closes it
}

type serviceSet struct {
	list   []*Service // in start order
	byName map[string]*Service
	// held are the services the boot leaves stopped, each with the conflicting service
	// listed before it that starts instead (config.HeldByConflict).
	held map[string]string
}

func (sv *Supervisor) services() []*Service { return sv.set.Load().list }

func (sv *Supervisor) lookup(name string) (*Service, bool) {
	s, ok := sv.set.Load().byName[name]
	return s, ok
}

// findShim returns the exec shim to use: the small baton-exec beside the running binary or at
// execshim.Path, else the running binary itself (self), which does the same when run as baton-exec
// but starts slower: it is the whole init.
func findShim(self string) string {
	for _, p := range []string{filepath.Join(filepath.Dir(self), "baton-exec"), execshim.Path} {
		if p != self && unix.Access(p, unix.X_OK) == nil {
			return p
		}
	}
	return self
}

// New prepares the services of cfg, in dependency order.
func New(cfg *config.Config, o Options) (*Supervisor, error) {
	e := &env{log: o.Log, reaper: o.Reaper, cgroups: o.Cgroups, shim: o.Shim, journal: o.Journal}
	if o.Console != nil {
		e.console = newConsole(o.Console, o.Log)
	}
	if e.shim == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the exec shim (this binary): %w", err)
		}
		e.shim = findShim(exe)
	}
	if o.RunDir != "" {
		e.notifyDir = filepath.Join(o.RunDir, "notify")
		if err := os.MkdirAll(e.notifyDir, 0o755); err != nil {
			return nil, fmt.Errorf("notify socket directory: %w", err)
		}
	}
	owns := false
	if e.journal == nil && cfg.Log.Dir != "" {
		e.journal, owns = OpenJournal(cfg.Log.Dir, cfg.Log.Size(), cfg.Log.KeptBoots(), o.Log), true
	}
	sv := &Supervisor{log: o.Log, env: e, console: e.console, journal: e.journal, ownsJrnl: owns}
	set := &serviceSet{byName: map[string]*Service{}, held: cfg.HeldByConflict()}
	sv.set.Store(set)
	for _, spec := range cfg.StartOrder() {
		s, err := newService(spec, e)
		if err != nil {
			sv.Close()
			return nil, err
		}
		set.list = append(set.list, s)
		set.byName[spec.Name] = s
	}
	return sv, nil
}

// StartReport is the outcome of starting one service.
type StartReport struct {
	Name string
	Took time.Duration
	Err  error
}

// StartAll starts each service in order, each after those it is ordered after are ready.
// A service whose required service is not running is not started; the others still are. Of
// two conflicting services only the one listed first in the config is started: the other is
// held (stopped, its status naming the conflict).
func (sv *Supervisor) StartAll() []StartReport {
	var out []StartReport
	for _, s := range sv.services() {
		out = append(out, sv.startAtBoot(s))
	}
	return out
}

// StartOne starts one service as StartAll would: it does not start what the service requires,
// and fails it when a required service is not running. The boot calls it for each service once
// what the service waits for is done, so independent services start at the same time.
func (sv *Supervisor) StartOne(name string) StartReport {
	s, ok := sv.lookup(name)
	if !ok {
		return StartReport{Name: name, Err: unknown(name)}
	}
	return sv.startAtBoot(s)
}

func (sv *Supervisor) startAtBoot(s *Service) StartReport {
	start := time.Now()
	if by, ok := sv.set.Load().held[s.spec().Name]; ok {
		s.request(request{op: opHold, other: by, err: fmt.Errorf("not started at boot: conflicts with %s, listed before it", by)})
		return StartReport{Name: s.spec().Name, Took: time.Since(start)}
	}
	err := sv.requiresUp(s)
	if err == nil {
		err = s.request(request{op: opStart}).err
	} else {
		s.request(request{op: opFail, err: err})
	}
	return StartReport{Name: s.spec().Name, Took: time.Since(start), Err: err}
}

func (sv *Supervisor) requiresUp(s *Service) error {
	for _, r := range s.spec().Requires {
		if st := sv.Status(r); st.State != Running && !(st.State == Stopped && st.Completed) {
			return fmt.Errorf("requires %s, which is %s", r, st.State)
		}
	}
	return nil
}

// Start starts a service and, first, the services it requires (and those it wants, whose
// failure does not fail it), after stopping those it conflicts with (deps.go). It returns
// when the service is ready, or with why it is not.
func (sv *Supervisor) Start(name string) error {
	s, ok := sv.lookup(name)
	if !ok {
		return unknown(name)
	}
	sv.beforeStart(s)
	for _, r := range s.spec().Requires {
		if err := sv.Start(r); err != nil {
			return fmt.Errorf("start %s: required %s: %w", name, r, err)
		}
	}
	return s.request(request{op: opStart}).err
}

// Stop stops a service and, first, the services that require it. It reports the services
// that had to be killed.
func (sv *Supervisor) Stop(name string) ([]string, error) {
	r, err := sv.StopReport(name)
	return r.Killed, err
}

// StopResult says what a stop did beside the service asked for.
type StopResult struct {
	Also   []string // services that require it and were stopped first (those that ran)
	Killed []string // services that needed SIGKILL after their stop_timeout
}

// StopReport stops a service and, first, the services that require it, and reports both.
func (sv *Supervisor) StopReport(name string) (StopResult, error) {
	s, ok := sv.lookup(name)
	if !ok {
		return StopResult{}, unknown(name)
	}
	var res StopResult
	list := sv.services()
	for i := len(list) - 1; i >= 0; i-- {
		d := list[i]
		for _, r := range d.spec().Requires {
			if r != name {
				continue
			}
			wasUp := d.Status().State != Stopped
			sub, _ := sv.StopReport(d.spec().Name)
			res.Also = append(res.Also, sub.Also...)
			if wasUp {
				res.Also = append(res.Also, d.spec().Name)
			}
			res.Killed = append(res.Killed, sub.Killed...)
		}
	}
	// An explicit stop flushes the fd store; crashes, restarts and upgrades keep it.
	rep := s.request(request{op: opStop, flush: true})
	if rep.killed {
		res.Killed = append(res.Killed, name)
	}
	return res, rep.err
}

// Restart stops and starts a service, and returns when it is ready again.
func (sv *Supervisor) Restart(name string) error {
	s, ok := sv.lookup(name)
	if !ok {
		return unknown(name)
	}
	return s.request(request{op: opRestart}).err
}

// StopAll stops the services in reverse start order and returns the names of those that had to
// be killed.
func (sv *Supervisor) StopAll() (killed []string) {
	list := sv.services()
	for i := len(list) - 1; i >= 0; i-- {
		s := list[i]
		if s.request(request{op: opStop}).killed {
			killed = append(killed, s.spec().Name)
		}
	}
	return killed
}

// Upgrade replaces a running service with a new version on the same sockets (see upgrade.go).
// execPath "" keeps the binary.
func (sv *Supervisor) Upgrade(name, execPath string) (UpgradeReport, error) {
	s, ok := sv.lookup(name)
	if !ok {
		return UpgradeReport{}, unknown(name)
	}
	rep := s.request(request{op: opUpgrade, exec: execPath})
	return rep.upgrade, rep.err
}

// Close releases what the supervisor holds (sockets, fd stores, notify sockets, log pipes) and
// ends the services' loops; call it after StopAll.
func (sv *Supervisor) Close() error {
	var errs []error
	for _, s := range sv.services() {
		errs = append(errs, s.close())
	}
	if sv.console != nil {
		sv.console.close()
	}
	if sv.ownsJrnl {
		sv.journal.Close()
	}
	return errors.Join(errs...)
}

// Journal is the persistent journal; nil for none.
func (sv *Supervisor) Journal() *Journal { return sv.journal }

// Service returns the named service, or nil.
func (sv *Supervisor) Service(name string) *Service {
	s, _ := sv.lookup(name)
	return s
}

// Status returns the named service's status; a name not configured is shown stopped.
func (sv *Supervisor) Status(name string) Status {
	if s, ok := sv.lookup(name); ok {
		return s.Status()
	}
	return Status{Name: name, State: Stopped}
}

// Statuses returns a snapshot of every service, in start order.
func (sv *Supervisor) Statuses() []Status {
	out := make([]Status, 0, len(sv.services()))
	for _, s := range sv.services() {
		out = append(out, s.Status())
	}
	return out
}

// ReloadService sends the service its reload_signal and, for a notify service, waits for its
// READY=1 (systemd's reload; see signals.go).
func (sv *Supervisor) ReloadService(name string) error {
	s, ok := sv.lookup(name)
	if !ok {
		return unknown(name)
	}
	return s.request(request{op: opReload}).err
}

// Kill sends sig to the service's processes (main: to its main process only).
func (sv *Supervisor) Kill(name string, sig unix.Signal, main bool) error {
	s, ok := sv.lookup(name)
	if !ok {
		return unknown(name)
	}
	return s.request(request{op: opKill, sig: sig, main: main}).err
}
