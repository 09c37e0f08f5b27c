package services

import (
	"errors"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/handoff"
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
			system.LogPanic(s.log, "notify reader of "+s.spec().Name, p)
			more = true
		}
	}()
	m, err := s.notify.Read()
	if err != nil && m.Fields == nil {
		return false // socket closed
	}
	n := notified{msg: m, err: err, sender: readSender(m.Pid)}
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
	for _, g := range s.st.ended {
		if time.Since(g.endedAt) < endedGrace && (g.pid == who.pid || (who.pgrp != 0 && g.pid == who.pgrp)) {
			return g
		}
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
		s.warn("stranger", "notify message from a process outside the service dropped", "pid", m.Pid)
		return
	}
	if errors.Is(n.err, handoff.ErrTooLarge) { // acting on a cut message could misread a key
		m.CloseFds()
		s.warn("too-large", "notify message dropped", "pid", m.Pid, "err", n.err)
		return
	}
	if n.err != nil {
		s.warn("read", "notify message", "pid", m.Pid, "err", n.err)
	}
	if f["FDSTORE"] == "1" && len(m.Fds) > 0 {
		name := f["FDNAME"]
		if name == "" {
			name = "stored"
		}
		if err := s.store.Add(name, m.Fds, f["FDPOLL"] != "0"); err != nil {
			s.warn("fdstore", "fd store", "err", err)
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
		if d, ok := s.usec("EXTEND_TIMEOUT_USEC", v); ok {
			extend = d
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
		s.st.statusMsg = system.EscapeControls(v)
	}
	if v, ok := f["MAINPID"]; ok {
		if pid, err := strconv.Atoi(v); err == nil && pid == n.mainPid.pid && s.generationOf(n.mainPid) == s.st.cur {
			s.st.mainPid = pid
		}
	}
	if f["RELOADING"] == "1" && s.st.phase == pRunning && s.st.up == nil {
		s.enter(pReloading, time.Now().Add(s.spec().StartTimeout.Duration)) // signals.go
	}
	if f["READY"] == "1" && s.spec().Type == config.TypeSimple { // the others: their starter's exit
		s.event(eReady)
	}
	if f["STOPPING"] == "1" && s.st.phase == pRunning {
		s.st.selfStopping = true
	}
	if v, ok := f["WATCHDOG_USEC"]; ok {
		if d, ok := s.usec("WATCHDOG_USEC", v); ok && d > 0 {
			s.st.wdInterval = d // for this run: the next start goes back to the config's
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

// maxUsec is the largest microsecond count a time.Duration holds (about 292 years).
const maxUsec = math.MaxInt64 / int64(time.Microsecond)

// usec parses a notify key's microseconds. A value that does not fit a Duration is refused
// (it would wrap: 18446744073709552 µs read as 384 ns killed a service at once).
func (s *Service) usec(key, v string) (time.Duration, bool) {
	us, err := strconv.ParseUint(v, 10, 64)
	if err != nil || us > uint64(maxUsec) {
		s.warn("bad-usec", "notify: value refused (not a number of microseconds that fits)", "key", key, "value", quoteShort(v))
		return 0, false
	}
	return time.Duration(us) * time.Microsecond, true
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
