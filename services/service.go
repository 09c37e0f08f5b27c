// Package services supervises the appliance's programs: start in dependency order, restart by
// policy with backoff, stop in reverse order within each service's stop timeout.
package services

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/system"
)

// State is where a service is in its lifecycle.
type State string

const (
	Stopped  State = "stopped"
	Starting State = "starting"
	Running  State = "running"
	Stopping State = "stopping"
	Failed   State = "failed"
)

// Backoff between restarts: doubles from BackoffMin up to BackoffMax, and starts over once a
// run has lasted BackoffReset.
var (
	BackoffMin   = 100 * time.Millisecond
	BackoffMax   = 5 * time.Second
	BackoffReset = 10 * time.Second
)

var errStopping = errors.New("service is stopping")

// Service is one supervised program. Its fields are guarded by mu; cond is broadcast on every
// change, so callers wait for a state instead of polling.
type Service struct {
	Spec config.Service

	log    *slog.Logger
	reaper *system.Reaper
	stdout *os.File
	stderr *os.File

	mu       sync.Mutex
	cond     *sync.Cond
	state    State
	pid      int
	started  time.Time
	restarts int
	lastExit *system.Exit
	lastErr  error
	stopReq  bool
	attempts int           // start attempts with an outcome; waitStarted waits for the first
	firstErr error         // the first attempt's error, if it failed
	looping  bool          // run has been called
	done     chan struct{} // closed when the run loop has ended
}

// Status is a snapshot of a service.
type Status struct {
	Name     string
	State    State
	Pid      int
	Since    time.Time
	Restarts int
	LastExit string
	LastErr  string
}

func newService(spec config.Service, log *slog.Logger, r *system.Reaper, stdout, stderr *os.File) *Service {
	s := &Service{Spec: spec, log: log.With("service", spec.Name), reaper: r,
		stdout: stdout, stderr: stderr, state: Stopped, done: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// Status returns a snapshot.
func (s *Service) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statusLocked()
}

func (s *Service) statusLocked() Status {
	st := Status{Name: s.Spec.Name, State: s.state, Pid: s.pid, Since: s.started, Restarts: s.restarts}
	if s.lastExit != nil {
		st.LastExit = s.lastExit.String()
	}
	if s.lastErr != nil {
		st.LastErr = s.lastErr.Error()
	}
	return st
}

func (s *Service) setState(st State) {
	s.state = st
	s.cond.Broadcast()
}

// waitStarted blocks until the first start attempt has an outcome.
func (s *Service) waitStarted() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.attempts == 0 && !s.stopReq {
		s.cond.Wait()
	}
	return s.firstErr
}

func (s *Service) recordAttempt(err error) {
	if s.attempts == 0 {
		s.firstErr = err
	}
	s.attempts++
}

// launch starts the run loop once.
func (s *Service) launch() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.looping || s.stopReq {
		return
	}
	s.looping = true
	go s.run()
}

// run is the service's loop: start, wait, decide whether to restart, back off.
func (s *Service) run() {
	defer close(s.done)
	defer system.Recover(s.log, "service "+s.Spec.Name)
	backoff := BackoffMin
	for {
		exit, startErr := s.startOnce()
		s.mu.Lock()
		stop := s.stopReq
		ranFor := time.Since(s.started)
		s.mu.Unlock()
		if stop {
			return
		}
		if !s.shouldRestart(exit, startErr) {
			return
		}
		if ranFor >= BackoffReset {
			backoff = BackoffMin
		}
		s.log.Info("restarting", "in", backoff)
		if !s.sleepUnlessStopped(backoff) {
			return
		}
		backoff = min(backoff*2, BackoffMax)
		s.mu.Lock()
		s.restarts++
		s.cond.Broadcast()
		s.mu.Unlock()
	}
}

// startOnce runs the program once and returns how it ended.
func (s *Service) startOnce() (system.Exit, error) {
	s.mu.Lock()
	if s.stopReq {
		// Checked under the lock Stop takes, so a stop never misses a process started after it.
		s.mu.Unlock()
		return system.Exit{}, errStopping
	}
	s.setState(Starting)
	cmd := s.command()
	exited, err := s.reaper.Start(cmd)
	if err != nil {
		err = fmt.Errorf("start %s: %w", s.Spec.Exec[0], err)
		s.lastErr = err
		s.pid = 0
		s.recordAttempt(err)
		s.setState(Failed)
		s.mu.Unlock()
		s.log.Error("start failed", "err", err)
		return system.Exit{}, err
	}
	s.pid, s.started, s.lastErr = cmd.Process.Pid, time.Now(), nil
	s.recordAttempt(nil)
	s.setState(Running)
	s.mu.Unlock()
	s.log.Info("started", "pid", cmd.Process.Pid)

	exit := <-exited
	_ = cmd.Process.Release() // the reaper waited; this only frees the pidfd
	s.mu.Lock()
	s.lastExit = &exit
	s.pid = 0
	stopping := s.stopReq
	if !stopping {
		s.setState(Stopped)
	}
	s.mu.Unlock()
	if !stopping {
		s.log.Info("exited", "how", exit.String())
	}
	return exit, nil
}

func (s *Service) shouldRestart(exit system.Exit, startErr error) bool {
	switch s.Spec.Restart {
	case config.RestartAlways:
		return true
	case config.RestartOnFailure:
		return startErr != nil || !exit.Success()
	default:
		return false
	}
}

func (s *Service) command() *exec.Cmd {
	cmd := &exec.Cmd{
		Path:   s.Spec.Exec[0],
		Args:   s.Spec.Exec,
		Env:    append([]string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/"}, s.Spec.Env...),
		Dir:    s.Spec.Dir,
		Stdout: s.stdout,
		Stderr: s.stderr,
		// Its own process group, so a stop reaches the children it started too.
		SysProcAttr: &unix.SysProcAttr{Setpgid: true},
	}
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	return cmd
}

// sleepUnlessStopped waits d, or less if a stop is requested; it reports whether to go on.
func (s *Service) sleepUnlessStopped(d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waitLocked(time.Now().Add(d), func() bool { return s.stopReq })
	return !s.stopReq
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

// Stop asks the service to end: SIGTERM to its process group, SIGKILL after its stop timeout.
// It returns once the process is gone and reports whether it had to be killed.
func (s *Service) Stop() (killed bool) {
	s.mu.Lock()
	s.stopReq = true
	if !s.looping {
		s.mu.Unlock()
		return false
	}
	pid := s.pid
	if pid != 0 {
		s.setState(Stopping)
	}
	s.cond.Broadcast()
	s.mu.Unlock()

	if pid != 0 {
		killed = s.terminate(pid)
	}
	<-s.done
	s.mu.Lock()
	s.setState(Stopped)
	s.mu.Unlock()
	return killed
}

func (s *Service) terminate(pid int) bool {
	timeout := s.Spec.StopTimeout.Duration
	if err := unix.Kill(-pid, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
		s.log.Warn("SIGTERM failed", "pid", pid, "err", err)
	}
	_ = unix.Kill(-pid, unix.SIGCONT) // a stopped process cannot act on SIGTERM
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.done:
		s.log.Info("stopped", "pid", pid)
		return false
	case <-t.C:
	}
	s.log.Warn("did not stop in time; killing its process group", "pid", pid, "stop_timeout", timeout)
	_ = unix.Kill(-pid, unix.SIGKILL)
	<-s.done
	return true
}

// WaitUntil blocks until ok(status) holds or timeout passes, and reports whether it held.
func (s *Service) WaitUntil(ok func(Status) bool, timeout time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waitLocked(time.Now().Add(timeout), func() bool { return ok(s.statusLocked()) })
}

// Done is closed when the service's run loop has ended for good (it will not restart).
func (s *Service) Done() <-chan struct{} { return s.done }
