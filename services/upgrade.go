package services

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// UpgradeReport says how an upgrade went.
type UpgradeReport struct {
	OldPid     int           `json:"old_pid"`
	NewPid     int           `json:"new_pid"`
	Exec       string        `json:"exec"`
	ReadyAfter time.Duration `json:"ready_after"` // new version started → READY=1
	Drained    time.Duration `json:"drained"`     // old version signalled → gone
	Killed     bool          `json:"killed"`      // the old version needed SIGKILL
	Handoff    bool          `json:"handoff"`     // the old version took the handoff channel
}

// ErrUpgradeInProgress refuses a second upgrade of the same service.
var ErrUpgradeInProgress = errors.New("an upgrade is already in progress")

// Upgrade replaces the running program with a new version without closing its sockets: the
// new version starts on the same held sockets and fd store, the old one keeps accepting until
// the new one is ready, then gets its stop signal. Both accept on the same socket meanwhile,
// so the kernel's accept queue is never closed. If the new version exits or is not ready within
// upgrade_timeout, it is killed and the old one keeps serving. execPath "" keeps the binary.
func (s *Service) Upgrade(execPath string) (UpgradeReport, error) {
	if execPath == "" {
		execPath = s.Spec.Exec[0]
	}
	rep := UpgradeReport{Exec: execPath}
	id, idErr := lookupIdentity(s.Spec)
	s.mu.Lock()
	if s.upgrading {
		newPid := 0
		if s.next != nil {
			newPid = s.next.pid
		}
		s.mu.Unlock()
		return rep, fmt.Errorf("%s: %w (new version pid %d)", s.Spec.Name, ErrUpgradeInProgress, newPid)
	}
	act, old := s.act, s.cur
	if act == nil || act.stopReq || old == nil || s.state != Running {
		st := s.state
		s.mu.Unlock()
		return rep, fmt.Errorf("%s is %s, not running: start it instead of upgrading", s.Spec.Name, st)
	}
	// The channel live connections move through: the old version's end goes to it over its
	// control channel once the new version is ready.
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		s.mu.Unlock()
		return rep, fmt.Errorf("upgrade %s: handoff channel: %w", s.Spec.Name, err)
	}
	oldEnd := pair[0]
	defer closeFd(&oldEnd)
	gen, err := s.spawnLocked(id, idErr, execPath, pair[1])
	unix.Close(pair[1])
	if err != nil {
		s.mu.Unlock()
		return rep, fmt.Errorf("upgrade %s: %w", s.Spec.Name, err)
	}
	s.upgrading, s.next = true, gen
	if s.Spec.Ready != "notify" {
		gen.ready = true
	}
	rep.OldPid, rep.NewPid = old.pid, gen.pid
	s.cond.Broadcast()
	deadline := gen.started.Add(s.Spec.UpgradeTimeout.Duration)
	s.waitLocked(deadline, func() bool { return gen.ready || gen.ended() || act.stopReq })
	if !gen.ready || gen.ended() || act.stopReq {
		reason := fmt.Sprintf("not ready within upgrade_timeout %s", s.Spec.UpgradeTimeout)
		switch {
		case gen.ended():
			reason = fmt.Sprintf("it %s before READY=1", gen.exit)
		case act.stopReq:
			reason = "the service is being stopped"
		}
		s.mu.Unlock()
		s.killGroup(gen.pid)
		<-gen.done
		closeFd(&gen.ctl)
		s.mu.Lock()
		s.next, s.upgrading = nil, false
		s.cond.Broadcast()
		s.mu.Unlock()
		s.wake()
		s.log.Error("upgrade failed; the old version keeps serving", "new_pid", gen.pid, "reason", reason)
		return rep, fmt.Errorf("upgrade %s: new version (pid %d) killed: %s; old version (pid %d) still serving",
			s.Spec.Name, gen.pid, reason, old.pid)
	}
	rep.ReadyAfter = time.Since(gen.started)
	// Swap: the new version is the service from now on; the run loop follows it.
	s.cur, s.pid, s.started = gen, gen.pid, gen.started
	s.readyAt, s.mainPid, s.statusMsg = time.Now(), 0, ""
	s.upgrades++
	s.armWatchdogLocked()
	s.cond.Broadcast()
	s.mu.Unlock()
	s.wake()
	s.log.Info("upgrade: new version ready; stopping the old one", "old_pid", old.pid, "new_pid", gen.pid, "ready_after", rep.ReadyAfter.Round(time.Millisecond))

	drain := time.Now()
	if !old.ended() {
		rep.Handoff = offerHandoff(old.ctl, oldEnd)
		closeFd(&oldEnd)
		rep.Killed = s.terminate(old)
	}
	closeFd(&old.ctl)
	rep.Drained = time.Since(drain)
	s.mu.Lock()
	s.next, s.upgrading = nil, false
	s.cond.Broadcast()
	s.mu.Unlock()
	s.wake()
	s.log.Info("upgrade done", "new_pid", gen.pid, "drained", rep.Drained.Round(time.Millisecond), "handoff", rep.Handoff)
	return rep, nil
}

// Handoff protocol on the control channel (SOCK_SEQPACKET): baton sends "HANDOFF" with the old
// version's end of the handoff channel; a process using handoff/client answers "ACK" before
// baton sends the stop signal, so it knows where to send its connections when the signal comes.
const (
	ctlHandoff = "HANDOFF"
	ctlAck     = "ACK"
	ackTimeout = time.Second
)

// offerHandoff gives the old version its end of the handoff channel and reports whether it
// acknowledged (a program without the client library never does; that is not an error).
func offerHandoff(ctl, end int) bool {
	if ctl < 0 {
		return false
	}
	if err := unix.Sendmsg(ctl, []byte(ctlHandoff), unix.UnixRights(end), nil, unix.MSG_NOSIGNAL); err != nil {
		return false
	}
	pfd := []unix.PollFd{{Fd: int32(ctl), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, int(ackTimeout.Milliseconds())); err != nil || n == 0 {
		return false
	}
	buf := make([]byte, 16)
	n, _, err := unix.Recvfrom(ctl, buf, unix.MSG_DONTWAIT)
	return err == nil && string(buf[:n]) == ctlAck
}
