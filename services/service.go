// Package services supervises the appliance's programs: start in dependency order, readiness,
// restart by policy with backoff and a limit, logs, and stop in reverse order within each
// service's stop timeout.
package services

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"

	"golang.org/x/sys/unix"

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
}

// activation is one period between a start and a stop; its run loop may restart the program
// many times.
type activation struct {
	stopReq bool
	done    chan struct{}
}

// Service is one supervised program. One mutex guards the fields below it; cond is broadcast
// on every change, so callers wait for a state instead of polling. Only the run loop changes
// pid and the state of a running program; Start and Stop change the activation.
type Service struct {
	Spec config.Service
	Logs *LogRing

	env    *env
	log    *slog.Logger
	stdout *logPipe
	stderr *logPipe
	notify *handoff.NotifySocket
	ops    sync.Mutex // serialises Start, Stop and Restart of this service

	mu         sync.Mutex
	cond       *sync.Cond
	state      State
	act        *activation
	pid        int
	cgroup     string
	started    time.Time // of the current run
	readyAt    time.Time
	firstUp    time.Time // first start of this boot, for the timeline
	firstRdy   time.Time
	restarts   int
	failures   []time.Time // recent restarts, for the restart limit
	lastExit   *system.Exit
	lastErr    error
	statusMsg  string // the service's own STATUS=
	outcomes   int    // start attempts that ended in ready or failure
	outcome    error  // the latest attempt's result
	runDecided bool   // the current run's attempt has an outcome
	// notifyDropped counts notify datagrams refused: not from the service's processes.
	notifyDropped int
}

func newService(spec config.Service, e *env) (*Service, error) {
	s := &Service{Spec: spec, Logs: newLogRing(DefaultLogLines), env: e, log: e.log.With("service", spec.Name), state: Stopped}
	s.cond = sync.NewCond(&s.mu)
	var err error
	if s.stdout, err = startLogPipe(spec.Name, "stdout", s.Logs, e.console, e.consoleMu); err != nil {
		return nil, err
	}
	if s.stderr, err = startLogPipe(spec.Name, "stderr", s.Logs, e.console, e.consoleMu); err != nil {
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

// recordOutcome ends a start attempt: nil when ready, else why it failed.
func (s *Service) recordOutcome(err error) {
	s.runDecided = true
	s.outcomes++
	s.outcome = err
	s.cond.Broadcast()
}

// run is an activation's loop: run the program, decide whether to restart, back off.
func (s *Service) run(act *activation) {
	defer close(act.done)
	defer system.Recover(s.log, "service "+s.Spec.Name)
	backoff := s.Spec.RestartDelay.Duration
	for {
		exit, err := s.runOnce(act)
		s.mu.Lock()
		if act.stopReq {
			s.mu.Unlock()
			return
		}
		failed := err != nil || !exit.Success()
		if !s.shouldRestart(failed) {
			if failed {
				s.setState(Failed)
			} else {
				s.setState(Stopped)
			}
			s.mu.Unlock()
			return
		}
		if time.Since(s.started) >= s.Spec.RestartWindow.Duration {
			backoff = s.Spec.RestartDelay.Duration // it stayed up a while: start over
		}
		if s.overRestartLimit() {
			s.lastErr = fmt.Errorf("restarted more than %d times in %s; giving up (initctl start %s to try again)",
				s.Spec.RestartLimit, s.Spec.RestartWindow, s.Spec.Name)
			s.log.Error("restart limit reached", "limit", s.Spec.RestartLimit, "window", s.Spec.RestartWindow)
			s.setState(Failed)
			s.mu.Unlock()
			return
		}
		s.setState(Starting)
		s.mu.Unlock()
		s.log.Info("restarting", "in", backoff)
		if !s.sleepUnlessStopped(act, backoff) {
			return
		}
		backoff = min(backoff*2, s.Spec.RestartDelayMax.Duration)
		s.mu.Lock()
		s.restarts++
		s.cond.Broadcast()
		s.mu.Unlock()
	}
}

func (s *Service) shouldRestart(failed bool) bool {
	switch s.Spec.Restart {
	case config.RestartAlways:
		return true
	case config.RestartOnFailure:
		return failed
	default:
		return false
	}
}

// overRestartLimit records a restart and reports whether there were more than the limit
// within the window. s.mu must be held.
func (s *Service) overRestartLimit() bool {
	now := time.Now()
	s.failures = append(s.failures, now)
	kept := s.failures[:0]
	for _, t := range s.failures {
		if now.Sub(t) < s.Spec.RestartWindow.Duration {
			kept = append(kept, t)
		}
	}
	s.failures = kept
	return s.Spec.RestartLimit > 0 && len(kept) > s.Spec.RestartLimit
}

// runOnce starts the program, waits for it to be ready, then for it to exit.
func (s *Service) runOnce(act *activation) (system.Exit, error) {
	id, idErr := lookupIdentity(s.Spec)
	s.mu.Lock()
	if act.stopReq {
		// Checked under the lock Stop takes, so a stop never misses a process started after it.
		s.mu.Unlock()
		return system.Exit{}, errStopping
	}
	s.setState(Starting)
	exited, err := s.startLocked(id, idErr)
	if err != nil {
		s.lastErr = err
		s.setState(Failed) // until the loop decides to try again
		s.recordOutcome(err)
		s.mu.Unlock()
		s.log.Error("start failed", "err", err)
		return system.Exit{}, err
	}
	pid := s.pid
	if s.Spec.Ready == config.ReadyStarted {
		s.markReadyLocked()
	}
	s.mu.Unlock()
	s.log.Info("started", "pid", pid)

	var timeout <-chan time.Time
	if s.Spec.Ready == config.ReadyNotify {
		t := time.NewTimer(s.Spec.StartTimeout.Duration)
		defer t.Stop()
		timeout = t.C
	}
	var exit system.Exit
	select {
	case exit = <-exited:
	case <-timeout:
		s.mu.Lock()
		notReady := s.state == Starting && s.pid == pid
		s.mu.Unlock()
		if notReady {
			err := fmt.Errorf("no READY=1 within start_timeout %s; killed", s.Spec.StartTimeout)
			s.log.Error("not ready in time", "start_timeout", s.Spec.StartTimeout)
			s.mu.Lock()
			s.lastErr = err
			s.recordOutcome(err)
			s.mu.Unlock()
			s.killTree(pid)
		}
		exit = <-exited
	}
	s.killTree(pid) // what it left behind must not outlive it, or a restart would find it
	s.mu.Lock()
	s.lastExit = &exit
	s.pid = 0
	if !s.runDecided {
		s.recordOutcome(fmt.Errorf("exited before it was ready: %s", exit))
	}
	stopping := act.stopReq
	s.mu.Unlock()
	if !stopping {
		s.log.Info("exited", "how", exit.String())
	}
	return exit, nil
}

// startLocked execs the program. s.mu must be held.
func (s *Service) startLocked(id identity, idErr error) (<-chan system.Exit, error) {
	if idErr != nil {
		return nil, fmt.Errorf("start %s: %w", s.Spec.Name, idErr)
	}
	cmd := s.command(id)
	var cgFile *os.File
	if s.env.cgroups != nil {
		dir, f, err := s.env.cgroups.prepare(s.Spec)
		if err != nil {
			return nil, err
		}
		cgFile, s.cgroup = f, dir
		defer cgFile.Close()
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cgFile.Fd())
	}
	exited, err := s.env.reaper.Start(cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Spec.Exec[0], err)
	}
	s.pid, s.started, s.lastErr, s.runDecided = cmd.Process.Pid, time.Now(), nil, false
	if s.firstUp.IsZero() {
		s.firstUp = s.started
	}
	_ = cmd.Process.Release() // the reaper waits; this only frees the pidfd
	return exited, nil
}

func (s *Service) markReadyLocked() {
	s.readyAt = time.Now()
	if s.firstRdy.IsZero() {
		s.firstRdy = s.readyAt
	}
	s.setState(Running)
	s.recordOutcome(nil)
}

func (s *Service) command(id identity) *exec.Cmd {
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=" + id.home, "USER=" + id.name, "LOGNAME=" + id.name}
	if s.notify != nil {
		env = append(env, "NOTIFY_SOCKET="+s.notify.Path)
	}
	cmd := &exec.Cmd{
		Path:   s.Spec.Exec[0],
		Args:   s.Spec.Exec,
		Env:    append(env, s.Spec.Env...),
		Dir:    s.Spec.Dir,
		Stdout: s.stdout.w,
		Stderr: s.stderr.w,
		// A session of its own (so a process group of its own, and no controlling terminal):
		// a stop reaches the children it started too.
		SysProcAttr: &unix.SysProcAttr{Setsid: true, Credential: id.cred},
	}
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	return cmd
}

// sleepUnlessStopped waits d, or less if a stop is requested; it reports whether to go on.
func (s *Service) sleepUnlessStopped(act *activation, d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waitLocked(time.Now().Add(d), func() bool { return act.stopReq })
	return !act.stopReq
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
