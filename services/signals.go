package services

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
)

// Reload is systemd's: the reload signal (reload_signal, default SIGHUP) goes to the main
// process only, as `ExecReload=kill -HUP $MAINPID` sends it — nginx's master re-reads its
// config and replaces its workers itself. A ready = "notify" service then reports its reload
// as systemd's Type=notify-reload does: RELOADING=1 … READY=1, and the reload succeeded when
// READY=1 came within start_timeout; meanwhile it is "reloading" (it still serves). A notify
// service may also reload on its own (RELOADING=1 without being asked): same phase.

func beginReload(s *Service, req request) {
	g := s.st.cur
	switch {
	case g == nil:
		s.answer(req.reply, reply{err: fmt.Errorf("%s has no process to reload (a oneshot with remain_after_exit)", s.spec().Name)})
		return
	case s.st.up != nil:
		s.answer(req.reply, reply{err: fmt.Errorf("%s is being upgraded; reload it afterwards", s.spec().Name)})
		return
	}
	sig, _ := config.SignalByName(s.spec().ReloadSignal)
	if err := unix.Kill(g.pid, sig); err != nil {
		s.answer(req.reply, reply{err: fmt.Errorf("reload %s: kill(%d, %s): %w", s.spec().Name, g.pid, unix.SignalName(sig), err)})
		return
	}
	s.log.Info("reload", "pid", g.pid, "signal", unix.SignalName(sig))
	if s.spec().Type != config.TypeSimple || s.spec().Ready != config.ReadyNotify {
		s.answer(req.reply, reply{})
		return
	}
	s.st.reloadWaiter = append(s.st.reloadWaiter, req.reply)
	s.enter(pReloading, time.Now().Add(s.spec().StartTimeout.Duration))
}

func awaitReload(s *Service, req request) {
	s.st.reloadWaiter = append(s.st.reloadWaiter, req.reply)
}

func cannotReload(s *Service, req request) {
	s.answer(req.reply, reply{err: fmt.Errorf("%s is %s, not running: nothing to reload", s.spec().Name, s.state())})
}

// reloadDone: READY=1 after the reload.
func reloadDone(s *Service, _ request) {
	s.log.Info("reloaded")
	s.enter(pRunning, time.Time{})
	s.armWatchdog()
	s.reloadOutcome(nil)
}

func reloadTimedOut(s *Service, _ request) {
	err := fmt.Errorf("no READY=1 within start_timeout %s after the reload; it still runs", s.spec().StartTimeout)
	s.log.Error("reload not confirmed", "err", err)
	s.enter(pRunning, time.Time{})
	s.armWatchdog()
	s.reloadOutcome(err)
}

func exitReloading(s *Service, req request) {
	s.reloadOutcome(errors.New("exited during the reload"))
	exitRunning(s, req)
}

// reloadOutcome answers whoever waits for the reload under way.
func (s *Service) reloadOutcome(err error) {
	for _, w := range s.st.reloadWaiter {
		s.answer(w, reply{err: err})
	}
	s.st.reloadWaiter = nil
}

// killAsked sends a signal to the service's processes: initctl kill (systemctl kill). With
// main, to the main process only; else to every generation's process group and cgroup.
func killAsked(s *Service, req request) {
	if len(s.st.gens) == 0 {
		s.answer(req.reply, reply{err: fmt.Errorf("%s is %s: no process to signal", s.spec().Name, s.state())})
		return
	}
	if req.main {
		g := s.st.cur
		if g == nil {
			s.answer(req.reply, reply{err: fmt.Errorf("%s has no main process (%s)", s.spec().Name, s.state())})
			return
		}
		err := unix.Kill(g.pid, req.sig)
		if err != nil {
			err = fmt.Errorf("kill(%d, %s): %w", g.pid, unix.SignalName(req.sig), err)
		}
		s.answer(req.reply, reply{err: err})
		return
	}
	for _, g := range s.st.gens {
		_ = g.signal(req.sig)
	}
	if s.st.cgroup != "" {
		for _, p := range cgroupProcs(s.st.cgroup) {
			_ = unix.Kill(p, req.sig)
		}
	}
	s.answer(req.reply, reply{})
}
