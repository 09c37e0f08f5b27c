package services

import (
	"strconv"
	"time"

	"github.com/baton-init/baton/handoff"
	"github.com/baton-init/baton/system"
)

// readNotify handles the service's notify datagrams for its whole life.
func (s *Service) readNotify() {
	defer system.Recover(s.log, "notify "+s.Spec.Name)
	for {
		m, err := s.notify.Read()
		if err != nil && m.Fields == nil {
			return // socket closed
		}
		if err != nil {
			s.log.Warn("notify", "err", err)
		}
		g := s.generationOf(m.Pid)
		if g == nil {
			m.CloseFds()
			s.log.Warn("notify message from a process outside the service dropped", "pid", m.Pid)
			s.mu.Lock()
			s.notifyDropped++
			s.cond.Broadcast()
			s.mu.Unlock()
			continue
		}
		s.applyNotify(g, m)
	}
}

// applyNotify acts on one authenticated datagram from generation g (systemd's sd_notify keys;
// unknown keys are ignored). Fds are kept only with FDSTORE=1; the rest are closed, which is
// also what answers BARRIER=1.
func (s *Service) applyNotify(g *generation, m handoff.Message) {
	f := m.Fields
	if f["FDSTORE"] == "1" && len(m.Fds) > 0 {
		name := f["FDNAME"]
		if name == "" {
			name = "stored"
		}
		if err := s.store.Add(name, m.Fds, f["FDPOLL"] != "0"); err != nil {
			s.log.Warn("fd store", "err", err)
		} else {
			s.log.Info("fd stored", "name", name, "count", len(m.Fds))
		}
	} else {
		m.CloseFds()
	}
	if f["FDSTOREREMOVE"] == "1" && f["FDNAME"] != "" {
		s.log.Info("fd store: removed", "name", f["FDNAME"], "count", s.store.Remove(f["FDNAME"]))
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.cond.Broadcast()
	if g == s.next { // the new version of an upgrade: only its readiness matters here
		if f["READY"] == "1" {
			g.ready = true
		}
		return
	}
	if v, ok := f["STATUS"]; ok {
		s.statusMsg = v
	}
	if v, ok := f["MAINPID"]; ok {
		if pid, err := strconv.Atoi(v); err == nil && s.generationOfLocked(pid) == g {
			s.mainPid = pid
		}
	}
	if f["RELOADING"] == "1" {
		s.reloading = true
	}
	if f["READY"] == "1" {
		s.reloading = false
		if s.state == Starting && s.cur == g && !s.runDecided {
			s.markReadyLocked()
			s.log.Info("ready", "after", time.Since(g.started).Round(time.Millisecond))
		}
	}
	if f["STOPPING"] == "1" && s.state == Running {
		s.setState(Stopping)
	}
	if v, ok := f["WATCHDOG_USEC"]; ok {
		if us, err := strconv.ParseInt(v, 10, 64); err == nil {
			s.wdInterval = time.Duration(us) * time.Microsecond
			s.armWatchdogLocked()
		}
	}
	switch f["WATCHDOG"] {
	case "1":
		s.armWatchdogLocked()
	case "trigger":
		s.wdDeadline = time.Now()
	}
	if v, ok := f["EXTEND_TIMEOUT_USEC"]; ok {
		if us, err := strconv.ParseInt(v, 10, 64); err == nil {
			until := time.Now().Add(time.Duration(us) * time.Microsecond)
			if s.state == Starting && until.After(s.startDeadline) {
				s.startDeadline = until
			}
			if s.state == Stopping && until.After(s.stopDeadline) {
				s.stopDeadline = until
			}
		}
	}
	s.wake()
}

// generationOf finds which process of the service sent a datagram: the main process of a
// generation, one of its descendants or process group, or (for the current generation) anything
// in the service's cgroup. nil means a stranger.
func (s *Service) generationOf(pid int) *generation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.generationOfLocked(pid)
}

func (s *Service) generationOfLocked(pid int) *generation {
	if pid <= 0 {
		return nil
	}
	gens := []*generation{s.cur, s.next}
	for _, g := range gens {
		if g != nil && g.pid == pid {
			return g
		}
	}
	st, err := system.ReadProcStat(pid)
	if err != nil {
		return nil
	}
	for _, g := range gens {
		if g != nil && st.Pgrp == g.pid {
			return g
		}
	}
	for p, hops := st.PPid, 0; p > 1 && hops < 64; hops++ {
		for _, g := range gens {
			if g != nil && g.pid == p {
				return g
			}
		}
		up, err := system.ReadProcStat(p)
		if err != nil {
			break
		}
		p = up.PPid
	}
	if s.cgroup != "" && s.cur != nil {
		for _, p := range cgroupProcs(s.cgroup) {
			if p == pid {
				return s.cur
			}
		}
	}
	return nil
}
