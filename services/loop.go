package services

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/system"
)

// testHook, when set by a test, runs in the loop before each input is handled: a test can
// hold the loop to force an interleaving, or panic to check the recovery.
var testHook atomic.Pointer[func(s *Service, in input)]

// loop owns the service's state: it takes one input at a time, or the one timer set to the
// phase's nearest deadline, decides, and publishes the new status. It never waits on anything
// else, so status and logs answer while a start, a stop or an upgrade is under way.
func (s *Service) loop() {
	defer close(s.loopDone)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var fire <-chan time.Time
		if d := s.nextDeadline(); !d.IsZero() {
			timer.Reset(time.Until(d))
			fire = timer.C
		}
		select {
		case in := <-s.inputs:
			s.safely(func() { s.handle(in) })
		case now := <-fire:
			s.safely(func() { s.deadlinesPassed(now) })
		case <-s.quit:
			timer.Stop()
			return
		}
		timer.Stop()
		s.safely(s.settle)
		s.safely(s.publish)
		s.sendAnswers()
	}
}

func (s *Service) handle(in input) {
	if h := testHook.Load(); h != nil {
		(*h)(s, in)
	}
	switch in := in.(type) {
	case request:
		s.onReq(in)
	case exited:
		s.reaped(in.gen, in.exit)
	case notified:
		s.onNotify(in)
	case freezeReq:
		s.onFreeze(in)
	case carryOffer:
		s.onCarryOffer(in)
	case acked:
		if up := s.st.up; up != nil && up.step == uOffered && up.old == in.gen {
			up.rep.Handoff = in.ok
			s.upgradeEvent(uAck)
		}
	}
}

// reaped is the end of a generation's main process, whichever it was: what it left in its
// process group is killed (and, once no generation is left, what is left in the cgroup), so a
// restart starts clean; then the table (main generation) or the upgrade decides.
func (s *Service) reaped(g *generation, exit system.Exit) {
	g.exit, g.ended, g.endedAt = exit, true, time.Now()
	for i, x := range s.st.gens {
		if x == g {
			s.st.gens = append(s.st.gens[:i], s.st.gens[i+1:]...)
			break
		}
	}
	s.st.ended = append(s.st.ended, g)
	if len(s.st.ended) > maxEnded {
		s.st.ended = s.st.ended[1:]
	}
	closeFd(&g.ctl)
	// A forking service's started process leaves its daemon behind on purpose (in its group
	// if the daemon did not call setsid, in the cgroup anyway): the table decides (forking.go).
	if !(g.starter && s.spec().Type == config.TypeForking) {
		killGroup(g)
		if len(s.st.gens) == 0 {
			s.killCgroup()
		}
	}
	if g.adopted {
		s.removePidFile(g.pid)
	}
	switch up := s.st.up; {
	case g == s.st.cmds.proc:
		s.event(eCmdExit)
	case g == s.st.cur && g.starter:
		s.event(eStarterExit)
	case g == s.st.cur:
		s.event(eExit)
	case up != nil && g == up.new:
		s.upgradeEvent(uNewExit)
	case up != nil && g == up.old:
		s.upgradeEvent(uOldExit)
	}
}

// maxEnded and endedGrace bound how long a reaped generation's late datagrams are accepted.
const (
	maxEnded   = 8
	endedGrace = 5 * time.Second
)

// settle closes a stop once every generation is gone, and starts again if asked meanwhile.
func (s *Service) settle() {
	if s.st.phase != pStopping || len(s.st.gens) > 0 {
		return
	}
	if !s.postThen(s.stopped) { // exec_stop_post first
		s.stopped()
	}
}

// stopped ends a stop: down (or failed), and started again if asked meanwhile.
func (s *Service) stopped() {
	s.enter(pDown, time.Time{})
	if err := s.st.failAfterStop; err != nil {
		s.enter(pFailed, time.Time{})
		s.st.lastErr, s.st.failAfterStop = err, nil
	}
	if s.st.killed {
		s.log.Warn("stopped; it had to be killed")
	} else {
		s.log.Info("stopped")
	}
	if s.st.flushStore {
		s.flushStore()
		s.st.flushStore = false
	}
	for _, w := range s.st.stopWaiters {
		s.answer(w, reply{killed: s.st.killed})
	}
	s.st.stopWaiters = nil
	if s.st.startAfter {
		s.st.startAfter = false
		s.st.failures, s.st.backoff = nil, s.spec().RestartDelay.Duration
		s.run()
	}
}

// nextDeadline is when the loop must look again without an input; zero for never.
func (s *Service) nextDeadline() time.Time {
	d := s.st.deadline
	if w := s.nextWarnFlush(); !w.IsZero() && (d.IsZero() || w.Before(d)) {
		d = w
	}
	if up := s.st.up; up != nil && !up.deadline.IsZero() && (d.IsZero() || up.deadline.Before(d)) {
		d = up.deadline
	}
	return d
}

func (s *Service) deadlinesPassed(now time.Time) {
	due := func(t time.Time) bool { return !t.IsZero() && !now.Before(t) }
	s.flushWarnings(now)
	if due(s.st.deadline) {
		s.st.deadline = time.Time{}
		s.event(eDeadline)
	}
	if up := s.st.up; up != nil && due(up.deadline) {
		up.deadline = time.Time{}
		s.upgradeEvent(uTimeout)
	}
}

// safely runs one step of the loop. A panic is a bug in baton, not in the service: it is
// logged with its stack (console and kernel log), the service is marked failed with its
// processes killed, everyone waiting is answered, and the loop goes on answering.
func (s *Service) safely(step func()) {
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		system.LogPanic(s.log, "the loop of service "+s.spec().Name+" (marked failed)", p)
		func() {
			defer func() { _ = recover() }() // the recovery itself must not take the loop down
			s.afterPanic(fmt.Errorf("internal error in baton (panic: %v); initctl start %s to try again", p, s.spec().Name))
		}()
	}()
	step()
}

func (s *Service) afterPanic(err error) {
	for _, g := range s.st.gens {
		killGroup(g)
	}
	s.killCgroup()
	if up := s.st.up; up != nil {
		closeFd(&up.oldEnd)
		s.answer(up.reply, reply{err: err, upgrade: up.rep})
		s.st.up = nil
	}
	s.outcome(err)
	for _, w := range s.st.stopWaiters {
		s.answer(w, reply{err: err})
	}
	s.st.stopWaiters, s.st.startAfter = nil, false
	s.st.cur, s.st.lastErr = nil, err
	s.enter(pFailed, time.Time{})
	if len(s.st.gens) > 0 { // stopping until the killed processes are reaped, then failed
		s.enter(pStopping, time.Time{})
		s.st.failAfterStop, s.st.killed = err, true
	}
}
