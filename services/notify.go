package services

import (
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/baton-init/baton/system"
)

// sender is what /proc says about a notify datagram's sender (its pid comes from
// SCM_CREDENTIALS, checked by the kernel). Read on the notify goroutine: the loop only
// compares it with the generations it knows.
type sender struct {
	pid       int
	pgrp      int    // 0 when /proc had nothing (it exited already)
	ancestors []int  // parent, grandparent, … up to init
	cgroup    string // its cgroup2 path as /proc/PID/cgroup shows it ("/baton/web")
}

// maxAncestry bounds the walk up the process tree.
const maxAncestry = 64

func readSender(pid int) sender {
	who := sender{pid: pid}
	if pid <= 0 {
		return who
	}
	st, err := system.ReadProcStat(pid)
	if err != nil {
		return who
	}
	who.pgrp = st.Pgrp
	for p, hops := st.PPid, 0; p > 1 && hops < maxAncestry; hops++ {
		who.ancestors = append(who.ancestors, p)
		up, err := system.ReadProcStat(p)
		if err != nil {
			break
		}
		p = up.PPid
	}
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "0::"); ok {
				who.cgroup = rest
			}
		}
	}
	return who
}

// readNotify passes the service's notify datagrams to its loop for as long as the socket is
// open.
func (s *Service) readNotify() {
	for s.readOneNotify() {
	}
}

func (s *Service) readOneNotify() (more bool) {
	defer func() {
		if p := recover(); p != nil {
			system.LogPanic(s.log, "notify reader of "+s.Spec.Name, p)
			more = true
		}
	}()
	m, err := s.notify.Read()
	if err != nil && m.Fields == nil {
		return false // socket closed
	}
	if err != nil {
		s.log.Warn("notify", "err", err)
	}
	n := notified{msg: m, sender: readSender(m.Pid)}
	if v, ok := m.Fields["MAINPID"]; ok {
		if pid, err := strconv.Atoi(v); err == nil {
			n.mainPid = readSender(pid)
		}
	}
	if !s.post(n) {
		m.CloseFds()
		return false
	}
	return true
}

// generationOf finds which generation sent a datagram: its main process, a process of its
// group, a descendant, or (for the main generation) anything in the service's cgroup. nil
// means a stranger.
func (s *Service) generationOf(who sender) *generation {
	if who.pid <= 0 {
		return nil
	}
	for _, g := range s.st.gens {
		if g.pid == who.pid || (who.pgrp != 0 && g.pid == who.pgrp) {
			return g
		}
	}
	for _, a := range who.ancestors {
		for _, g := range s.st.gens {
			if g.pid == a {
				return g
			}
		}
	}
	if s.st.cur != nil && s.st.cgroup != "" && who.cgroup != "" && strings.HasSuffix(s.st.cgroup, who.cgroup) {
		return s.st.cur
	}
	return nil
}

// onNotify acts on one datagram (systemd's sd_notify keys; unknown keys are ignored). Fds are
// kept only with FDSTORE=1; the rest are closed, which is also what answers BARRIER=1.
func (s *Service) onNotify(n notified) {
	m, f := n.msg, n.msg.Fields
	g := s.generationOf(n.sender)
	if g == nil {
		m.CloseFds()
		s.st.notifyDropped++
		s.log.Warn("notify message from a process outside the service dropped", "pid", m.Pid)
		return
	}
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
	extend := time.Duration(-1)
	if v, ok := f["EXTEND_TIMEOUT_USEC"]; ok {
		if us, err := strconv.ParseInt(v, 10, 64); err == nil && us >= 0 {
			extend = time.Duration(us) * time.Microsecond
		}
	}
	up := s.st.up
	switch {
	case up != nil && g == up.new: // the new version of an upgrade: its readiness is the upgrade's
		if extend >= 0 {
			up.deadline = later(up.deadline, time.Now().Add(extend))
		}
		if f["READY"] == "1" {
			s.upgradeEvent(uReady)
		}
	case g != s.st.cur || s.st.phase == pStopping:
		// A generation that is ending (the old version of an upgrade, a service being
		// stopped) may still speak, typically STOPPING=1: accepted, not forged.
		s.st.notifyLate++
		s.log.Debug("notify from an ending generation", "pid", m.Pid, "generation", g.pid)
		if extend >= 0 {
			if up != nil && g == up.old && up.step == uDraining {
				up.deadline = later(up.deadline, time.Now().Add(extend))
			} else if s.st.phase == pStopping && !s.st.deadline.IsZero() {
				s.st.deadline = later(s.st.deadline, time.Now().Add(extend))
			}
		}
	default:
		s.fromMain(n, extend)
	}
}

// fromMain applies the keys of a datagram from the main generation.
func (s *Service) fromMain(n notified, extend time.Duration) {
	f := n.msg.Fields
	if v, ok := f["STATUS"]; ok {
		s.st.statusMsg = v
	}
	if v, ok := f["MAINPID"]; ok {
		if pid, err := strconv.Atoi(v); err == nil && pid == n.mainPid.pid && s.generationOf(n.mainPid) == s.st.cur {
			s.st.mainPid = pid
		}
	}
	if f["RELOADING"] == "1" {
		s.st.reloading = true
	}
	if f["READY"] == "1" {
		s.event(eReady)
	}
	if f["STOPPING"] == "1" && s.st.phase == pRunning {
		s.st.selfStopping = true
	}
	if v, ok := f["WATCHDOG_USEC"]; ok {
		if us, err := strconv.ParseInt(v, 10, 64); err == nil && us > 0 {
			s.st.wdInterval = time.Duration(us) * time.Microsecond
			s.armWatchdog()
		}
	}
	switch f["WATCHDOG"] {
	case "1":
		s.armWatchdog()
	case "trigger":
		if s.st.phase == pRunning && s.st.wdInterval > 0 {
			s.st.deadline = time.Now()
		}
	}
	if extend >= 0 && s.st.phase == pStarting && !s.st.deadline.IsZero() {
		s.st.deadline = later(s.st.deadline, time.Now().Add(extend))
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
