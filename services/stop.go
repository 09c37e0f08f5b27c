package services

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/system"
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
// It returns once the program is gone and reports whether it had to be killed.
func (s *Service) stop() (killed bool) {
	s.mu.Lock()
	act := s.act
	if act == nil {
		s.mu.Unlock()
		return false
	}
	act.stopReq = true
	pid := s.pid
	if pid != 0 {
		s.setState(Stopping)
	}
	s.cond.Broadcast()
	s.mu.Unlock()

	if pid != 0 {
		killed = s.terminate(pid, act)
	}
	<-act.done
	s.mu.Lock()
	s.act = nil
	s.setState(Stopped)
	s.mu.Unlock()
	return killed
}

func (s *Service) terminate(pid int, act *activation) bool {
	sig, _ := config.SignalByName(s.Spec.StopSignal)
	timeout := s.Spec.StopTimeout.Duration
	s.signalTree(pid, sig)
	s.signalTree(pid, unix.SIGCONT) // a stopped process cannot act on the signal
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-act.done:
		s.log.Info("stopped", "pid", pid)
		return false
	case <-t.C:
	}
	s.log.Warn("did not stop in time; killing it", "pid", pid, "stop_timeout", timeout)
	s.killTree(pid)
	<-act.done
	return true
}

// signalTree sends sig to the service's process group and to everything in its cgroup (which
// also holds processes that started a session of their own).
func (s *Service) signalTree(pid int, sig unix.Signal) {
	if err := unix.Kill(-pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		s.log.Warn("signal failed", "pid", pid, "signal", unix.SignalName(sig), "err", err)
	}
	s.mu.Lock()
	dir := s.cgroup
	s.mu.Unlock()
	if dir != "" {
		for _, p := range cgroupProcs(dir) {
			_ = unix.Kill(p, sig)
		}
	}
}

// killTree SIGKILLs whatever is left of the service's tree.
func (s *Service) killTree(pid int) {
	_ = unix.Kill(-pid, unix.SIGKILL)
	s.mu.Lock()
	dir := s.cgroup
	s.mu.Unlock()
	if dir != "" {
		if err := cgroupKill(dir); err != nil && len(cgroupProcs(dir)) > 0 {
			s.log.Warn("cgroup.kill failed", "cgroup", dir, "err", err)
		}
	}
}

// readNotify handles the service's notify datagrams for its whole life.
func (s *Service) readNotify() {
	for {
		m, err := s.notify.Read()
		if err != nil && m.Fields == nil {
			return // socket closed
		}
		if err != nil {
			s.log.Warn("notify", "err", err)
		}
		m.CloseFds() // fds without a store to keep them are closed, as systemd does
		if !s.belongs(m.Pid) {
			s.log.Warn("notify message from a process outside the service dropped", "pid", m.Pid)
			s.mu.Lock()
			s.notifyDropped++
			s.cond.Broadcast()
			s.mu.Unlock()
			continue
		}
		s.applyNotify(m.Fields)
	}
}

func (s *Service) applyNotify(f map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := f["STATUS"]; ok {
		s.statusMsg = v
		s.cond.Broadcast()
	}
	if f["READY"] == "1" && s.state == Starting && s.pid != 0 && !s.runDecided {
		s.markReadyLocked()
		s.log.Info("ready", "after", time.Since(s.started).Round(time.Millisecond))
	}
	if f["STOPPING"] == "1" && s.state == Running {
		s.setState(Stopping)
	}
}

// belongs reports whether pid is the service's main process or one of its descendants: in its
// cgroup, or with the main process among its ancestors.
func (s *Service) belongs(pid int) bool {
	s.mu.Lock()
	main, dir := s.pid, s.cgroup
	s.mu.Unlock()
	if pid <= 0 || main == 0 {
		return false
	}
	if pid == main {
		return true
	}
	if dir != "" {
		for _, p := range cgroupProcs(dir) {
			if p == pid {
				return true
			}
		}
	}
	for p, hops := pid, 0; p > 1 && hops < 64; hops++ {
		st, err := system.ReadProcStat(p)
		if err != nil {
			return false
		}
		if st.PPid == main {
			return true
		}
		p = st.PPid
	}
	return false
}

// ErrUnknown is returned for a service name that is not configured.
var ErrUnknown = errors.New("unknown service")

func unknown(name string) error { return fmt.Errorf("%w %q", ErrUnknown, name) }
