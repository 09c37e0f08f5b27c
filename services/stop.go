package services

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
)

// start begins an activation and waits for the first attempt's outcome: ready, or why not.
// Starting a service that is active already is not an error.
func (s *Service) start() error {
	s.mu.Lock()
	if s.act != nil {
		select {
		case <-s.act.done: // ended on its own (exited, not restarted): start anew
		default:
			s.mu.Unlock()
			return nil // active already
		}
	}
	act := &activation{done: make(chan struct{})}
	s.act = act
	s.failures, s.lastErr = nil, nil
	seen := s.outcomes
	s.mu.Unlock()
	go s.run(act)

	s.mu.Lock()
	defer s.mu.Unlock()
	for s.outcomes == seen && !act.stopReq {
		s.cond.Wait()
	}
	if act.stopReq {
		return errStopping
	}
	return s.outcome
}

// stop ends the activation: the stop signal to the whole tree, SIGKILL after the stop timeout.
// A new version being started by an upgrade is killed first. It returns once the program is
// gone and reports whether it had to be killed.
func (s *Service) stop() (killed bool) {
	s.mu.Lock()
	act := s.act
	if act == nil {
		s.mu.Unlock()
		return false
	}
	act.stopReq = true
	cur := s.cur
	if cur != nil {
		s.setState(Stopping)
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	s.wake()
	s.waitUpgradeDone()

	if cur != nil && !cur.ended() {
		killed = s.terminate(cur)
	}
	<-act.done
	s.mu.Lock()
	s.act = nil
	s.setState(Stopped)
	s.mu.Unlock()
	return killed
}

// waitUpgradeDone waits until no upgrade is running (a stop makes a running one give up).
func (s *Service) waitUpgradeDone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.upgrading {
		s.cond.Wait()
	}
}

// terminate stops generation g: its stop signal to its tree, SIGKILL after the stop timeout
// (which EXTEND_TIMEOUT_USEC may extend). It reports whether SIGKILL was needed.
func (s *Service) terminate(g *generation) bool {
	sig, _ := config.SignalByName(s.Spec.StopSignal)
	s.signalTree(g.pid, sig)
	s.signalTree(g.pid, unix.SIGCONT) // a stopped process cannot act on the signal
	s.mu.Lock()
	deadline := time.Now().Add(s.Spec.StopTimeout.Duration)
	s.stopDeadline = deadline
	ended := s.waitLocked(deadline, g.ended)
	for !ended && s.stopDeadline.After(deadline) { // extended meanwhile
		deadline = s.stopDeadline
		ended = s.waitLocked(deadline, g.ended)
	}
	s.mu.Unlock()
	if ended {
		s.log.Info("stopped", "pid", g.pid)
		return false
	}
	s.log.Warn("did not stop in time; killing it", "pid", g.pid, "stop_timeout", s.Spec.StopTimeout)
	s.killGroup(g.pid)
	s.mu.Lock()
	current := s.cur == g
	s.mu.Unlock()
	if current {
		s.killCgroup()
	}
	<-g.done
	return true
}

// signalTree sends sig to a generation's process group and, when it is the only generation,
// to everything in the service's cgroup (which also holds processes that left the group).
func (s *Service) signalTree(pid int, sig unix.Signal) {
	if err := unix.Kill(-pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		s.log.Warn("signal failed", "pid", pid, "signal", unix.SignalName(sig), "err", err)
	}
	s.mu.Lock()
	dir, alone := s.cgroup, s.next == nil
	s.mu.Unlock()
	if dir != "" && alone {
		for _, p := range cgroupProcs(dir) {
			_ = unix.Kill(p, sig)
		}
	}
}

// killGroup SIGKILLs a generation's process group.
func (s *Service) killGroup(pid int) { _ = unix.Kill(-pid, unix.SIGKILL) }

// killCgroup SIGKILLs everything in the service's cgroup; only when no other generation runs.
func (s *Service) killCgroup() {
	s.mu.Lock()
	dir, alone := s.cgroup, s.next == nil
	s.mu.Unlock()
	if dir == "" || !alone {
		return
	}
	if err := cgroupKill(dir); err != nil && len(cgroupProcs(dir)) > 0 {
		s.log.Warn("cgroup.kill failed", "cgroup", dir, "err", err)
	}
}

// ErrUnknown is returned for a service name that is not configured.
var ErrUnknown = errors.New("unknown service")

func unknown(name string) error { return fmt.Errorf("%w %q", ErrUnknown, name) }
