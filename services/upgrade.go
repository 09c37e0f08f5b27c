package services

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/system"
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

// An upgrade replaces the running program with a new version without closing its sockets: the
// new version starts on the same held sockets and fd store while the old one keeps accepting;
// once the new one is ready it becomes the service, the old one is offered the handoff channel
// (live connections move through it) and then gets its stop signal. Both accept on the same
// socket meanwhile, so the kernel's accept queue is never closed. If the new version exits or
// is not ready within upgrade_timeout, it is killed and the old one keeps serving.
type upgrade struct {
	step     upStep
	new      *generation     // until it is ready and becomes the main generation
	spec     *config.Service // the new version's config; the service's once it is ready
	old      *generation     // from then on, until it is reaped
	oldEnd   int             // baton's end of the handoff channel, until offered to the old version
	deadline time.Time       // of the step: ready, handoff acknowledged, drained
	drainAt  time.Time
	reason   string       // why the new version is being killed
	oldExit  *system.Exit // the old version ended before the new one was ready
	rep      UpgradeReport
	reply    chan<- reply
}

type upStep int

const (
	uWaitReady upStep = iota // new version started; old serving
	uSettling                // ready = "started": the new version must stay up upgrade_settle
	uOffered                 // new version is the service; handoff offered to the old one
	uDraining                // old version has its stop signal
	uAborting                // new version killed; waiting for it to be reaped
	nUpSteps
)

type upEvent int

const (
	uReady   upEvent = iota // READY=1 from the new version
	uNewExit                // the new version ended (before it was ready)
	uOldExit                // the old version ended (after the swap)
	uAck                    // the old version answered the handoff offer
	uTimeout                // the step's deadline passed
	uStop                   // the service is being stopped
	nUpEvents
)

// upTable is the upgrade's sub-state machine: step × event. Empty cells: nothing to do (a stop
// after the swap signals the old version with every other generation).
var upTable = [nUpSteps][nUpEvents]func(*Service){
	uWaitReady: {uReady: swapIn, uNewExit: newEndedEarly, uTimeout: abortNotReady, uStop: abortForStop},
	uSettling:  {uNewExit: newEndedEarly, uTimeout: swapIn, uStop: abortForStop},
	uOffered:   {uOldExit: upgradeDone, uAck: drainOld, uTimeout: drainOld},
	uDraining:  {uOldExit: upgradeDone, uTimeout: killOld},
	uAborting:  {uNewExit: upgradeFailed},
}

func (s *Service) upgradeEvent(ev upEvent) {
	if a := upTable[s.st.up.step][ev]; a != nil {
		a(s)
	}
}

// Handoff protocol on the control channel (SOCK_SEQPACKET): baton sends "HANDOFF" with the old
// version's end of the handoff channel; a process using handoff/client answers "ACK" before
// baton sends the stop signal, so it knows where to send its connections when the signal comes.
const (
	ctlHandoff = "HANDOFF"
	ctlAck     = "ACK"
	ctlHello   = "HELLO" // handoff/client's first message: it reads the channel
	ackTimeout = time.Second
)

func beginUpgrade(s *Service, req request) {
	// The new version runs the config the request brings (a reloaded one) or the current one,
	// with another binary if asked; it stays the service's config if the upgrade succeeds, so
	// a later restart runs the new version too.
	spec := s.spec()
	if req.spec != nil {
		spec = req.spec
	}
	execPath := req.exec
	if execPath == "" {
		execPath = spec.Exec[0]
	}
	if execPath != spec.Exec[0] {
		c := *spec
		c.Exec = append([]string{execPath}, spec.Exec[1:]...)
		spec = &c
	}
	rep := UpgradeReport{Exec: execPath}
	if !filepath.IsAbs(execPath) {
		s.answer(req.reply, reply{err: fmt.Errorf("exec %q: want an absolute path", execPath), upgrade: rep})
		return
	}
	if up := s.st.up; up != nil {
		pid := up.rep.NewPid
		s.answer(req.reply, reply{err: fmt.Errorf("%w (new version pid %d)", ErrUpgradeInProgress, pid), upgrade: rep})
		return
	}
	if t := s.spec().Type; t != config.TypeSimple {
		s.answer(req.reply, reply{err: fmt.Errorf("%s is a %s service: only simple ones are upgraded on their held sockets; restart it (or reload it)", s.spec().Name, t), upgrade: rep})
		return
	}
	if s.st.selfStopping {
		s.answer(req.reply, reply{err: fmt.Errorf("%s is stopping (STOPPING=1), not running: start it instead of upgrading", s.spec().Name), upgrade: rep})
		return
	}
	// The channel live connections move through: the old version's end goes to it over its
	// control channel once the new version is ready.
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		s.answer(req.reply, reply{err: fmt.Errorf("handoff channel: %w", err), upgrade: rep})
		return
	}
	g, err := s.spawn(spec, execPath, pair[1])
	unix.Close(pair[1])
	if err != nil {
		unix.Close(pair[0])
		s.answer(req.reply, reply{err: err, upgrade: rep})
		return
	}
	rep.OldPid, rep.NewPid = s.st.cur.pid, g.pid
	s.st.up = &upgrade{step: uWaitReady, new: g, spec: spec, oldEnd: pair[0], rep: rep, reply: req.reply,
		deadline: g.started.Add(s.spec().UpgradeTimeout.Duration)}
	s.log.Info("upgrade: new version started", "old_pid", rep.OldPid, "new_pid", g.pid, "exec", execPath)
	if s.spec().Ready != config.ReadyNotify {
		// Nothing proves it works but staying up: a binary that exits at once must not
		// replace one that serves.
		s.st.up.step, s.st.up.deadline = uSettling, g.started.Add(s.spec().UpgradeSettle.Duration)
	}
}

// swapIn makes the ready new version the service, and offers the old one the handoff.
func swapIn(s *Service) {
	up := s.st.up
	g, old := up.new, s.st.cur
	up.rep.ReadyAfter = time.Since(g.started)
	up.new, up.old = nil, old
	s.specp.Store(up.spec)
	s.st.cur, s.st.started, s.st.readyAt = g, g.started, time.Now()
	s.st.mainPid, s.st.statusMsg = 0, ""
	s.st.upgrades++
	s.enter(pRunning, time.Time{}) // also when the old version ended meanwhile (pStarting)
	s.armWatchdog()
	s.outcome(nil) // a start asked for meanwhile
	if old == nil {
		s.log.Info("upgrade: new version ready; the old one had ended", "new_pid", g.pid)
		closeFd(&up.oldEnd)
		upgradeDone(s)
		return
	}
	s.log.Info("upgrade: new version ready; stopping the old one", "old_pid", old.pid, "new_pid", g.pid,
		"ready_after", up.rep.ReadyAfter.Round(time.Millisecond))
	up.drainAt = time.Now()
	if !saidHello(old.ctl) {
		// Not a process of handoff/client: nothing would answer the offer, so no wait for an
		// ACK that cannot come (ackTimeout).
		s.log.Info("upgrade: the old version never opened its control channel; stopping it now", "old_pid", old.pid)
		closeFd(&up.oldEnd)
		drainOld(s)
		return
	}
	err := unix.Sendmsg(old.ctl, []byte(ctlHandoff), unix.UnixRights(up.oldEnd), nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
	closeFd(&up.oldEnd)
	if err != nil {
		drainOld(s)
		return
	}
	ctl, err := unix.FcntlInt(uintptr(old.ctl), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		drainOld(s)
		return
	}
	up.step, up.deadline = uOffered, time.Now().Add(ackTimeout)
	go s.awaitAck(old, ctl)
}

// saidHello reads what a generation sent on its control channel so far (never blocking) and
// reports whether it announced itself.
func saidHello(ctl int) bool {
	buf, hello := make([]byte, 16), false
	for {
		n, _, err := unix.Recvfrom(ctl, buf, unix.MSG_DONTWAIT)
		if err != nil || n == 0 {
			return hello
		}
		hello = hello || string(buf[:n]) == ctlHello
	}
}

// awaitAck waits (outside the loop, on its own copy of the control channel) for the old
// version to acknowledge the offer; a program without the client library never does.
func (s *Service) awaitAck(g *generation, ctl int) {
	defer system.Recover(s.log, "upgrade ack "+s.spec().Name)
	defer unix.Close(ctl)
	ok := false
	pfd := []unix.PollFd{{Fd: int32(ctl), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, int(ackTimeout.Milliseconds())); err == nil && n > 0 {
		buf := make([]byte, 16)
		n, _, err := unix.Recvfrom(ctl, buf, unix.MSG_DONTWAIT)
		ok = err == nil && string(buf[:n]) == ctlAck
	}
	s.post(acked{gen: g, ok: ok})
}

func drainOld(s *Service) {
	up := s.st.up
	sig, _ := config.SignalByName(s.spec().StopSignal)
	if s.spec().KillMode == config.KillMixed {
		_ = unix.Kill(up.old.pid, sig) // the rest once it ended (reaped)
	} else {
		s.signalTree(up.old, sig, false)
	}
	up.step, up.deadline, up.drainAt = uDraining, time.Now().Add(s.spec().StopTimeout.Duration), time.Now()
}

func killOld(s *Service) {
	up := s.st.up
	s.log.Warn("upgrade: old version did not stop in time; killing it", "pid", up.old.pid, "stop_timeout", s.spec().StopTimeout)
	killGroup(up.old)
	up.rep.Killed = true
}

func upgradeDone(s *Service) {
	up := s.st.up
	if !up.drainAt.IsZero() {
		up.rep.Drained = time.Since(up.drainAt)
	}
	s.st.up = nil
	s.log.Info("upgrade done", "new_pid", up.rep.NewPid, "drained", up.rep.Drained.Round(time.Millisecond), "handoff", up.rep.Handoff)
	s.answer(up.reply, reply{upgrade: up.rep})
}

func newEndedEarly(s *Service) {
	up := s.st.up
	up.reason = fmt.Sprintf("it %s before READY=1", up.new.exit)
	if up.step == uSettling {
		up.reason = fmt.Sprintf("it %s within upgrade_settle %s", up.new.exit, s.spec().UpgradeSettle)
	}
	upgradeFailed(s)
}

func abortNotReady(s *Service) {
	s.abortUpgrade(fmt.Sprintf("not ready within upgrade_timeout %s", s.spec().UpgradeTimeout))
}

func abortForStop(s *Service) { s.abortUpgrade("the service is being stopped") }

func (s *Service) abortUpgrade(reason string) {
	up := s.st.up
	up.reason, up.step, up.deadline = reason, uAborting, time.Time{}
	killGroup(up.new)
}

// upgradeFailed answers once the new version is gone. If the old version ended meanwhile,
// its exit now goes through the restart policy, as it would have without the upgrade.
func upgradeFailed(s *Service) {
	up := s.st.up
	s.st.up = nil
	closeFd(&up.oldEnd)
	serving := fmt.Sprintf("old version (pid %d) still serving", up.rep.OldPid)
	if up.oldExit != nil {
		serving = fmt.Sprintf("old version (pid %d) %s meanwhile", up.rep.OldPid, up.oldExit)
	}
	s.log.Error("upgrade failed", "new_pid", up.rep.NewPid, "reason", up.reason, "old", serving)
	s.answer(up.reply, reply{upgrade: up.rep, err: fmt.Errorf("new version (pid %d) killed: %s; %s",
		up.rep.NewPid, up.reason, serving)})
	if up.oldExit != nil && s.st.phase == pStarting && s.st.cur == nil {
		failed := !s.exitOK(*up.oldExit)
		s.st.lastEnd = s.howItEnded(&generation{exit: *up.oldExit})
		if failed {
			s.st.lastErr = fmt.Errorf("%s", up.oldExit)
		}
		s.restartOrEnd(failed)
	}
}
