package services

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
)

// The lifecycle of a service is two tables over its phases: what each request does, and what
// each event of its main generation does (it ended, it is ready, the phase's deadline passed).
// Each phase has at most one deadline — restart at, ready by, watchdog, kill at — set when
// the phase is entered (enter). An upgrade is a sub-state with a table of its own (upgrade.go);
// what happens to every reaped generation first is in reaped (loop.go).

// action is one cell. req is the request for onRequest cells, zero for onEvent ones.
type action func(s *Service, req request)

// onRequest: every cell answers, at once or when the transition it starts is over.
var onRequest = [nPhases][nOps]action{ // columns: start, stop, restart, upgrade, fail, configure, reload, kill, hold
	pDown:      {startFresh, stopIdle, startFresh, notRunning, failNow, configure, cannotReload, killAsked, holdDown},
	pFailed:    {startFresh, stopIdle, startFresh, notRunning, failNow, configure, cannotReload, killAsked, holdDown},
	pBackoff:   {startFresh, stopIdle, startFresh, notRunning, answerOK, configure, cannotReload, killAsked, answerOK},
	pStarting:  {awaitStart, beginStop, stopThenStart, notRunning, answerOK, configure, cannotReload, killAsked, answerOK},
	pRunning:   {answerOK, beginStop, stopThenStart, beginUpgrade, answerOK, configure, beginReload, killAsked, answerOK},
	pStopping:  {startLater, awaitStop, startLater, notRunning, answerOK, configure, cannotReload, killAsked, answerOK},
	pPidWait:   {awaitStart, stopPidWait, restartPidWait, notRunning, answerOK, configure, cannotReload, killAsked, answerOK},
	pReloading: {answerOK, beginStop, stopThenStart, notRunning, answerOK, configure, awaitReload, killAsked, answerOK},
	pPreStart:  {awaitStart, beginStop, stopThenStart, notRunning, answerOK, configure, cannotReload, killAsked, answerOK},
	pPostStop:  {startLater, stopAfterPost, startLater, notRunning, answerOK, configure, cannotReload, killAsked, answerOK},
}

type event int

const (
	eExit        event = iota // the main generation ended
	eReady                    // READY=1 from the main generation
	eDeadline                 // the phase's deadline passed
	eStarterExit              // forking, oneshot: the started process ended (forking.go)
	eCmdExit                  // an exec_start_pre or exec_stop_post command ended (prepost.go)
	nEvents
)

var eventNames = [nEvents]string{"exit", "ready", "deadline", "starter-exit", "cmd-exit"}

func (e event) String() string { return eventNames[e] }

// onEvent: nil where the event cannot happen (no main generation, no deadline).
var onEvent = [nPhases][nEvents]action{ // columns: exit, ready, deadline (which one), starter exit, command exit
	pDown:      {nil, nil, nil, nil, nil},
	pFailed:    {nil, nil, nil, nil, nil},
	pBackoff:   {nil, nil, startAgain, nil, nil},                               // restart_delay, doubling up to restart_delay_max
	pStarting:  {exitStarting, becomeReady, startTimedOut, starterExited, nil}, // start_timeout (notify, forking, oneshot)
	pRunning:   {exitRunning, readyAgain, watchdogFired, nil, nil},             // watchdog, if any
	pStopping:  {exitStopping, nil, stopTimedOut, starterStopped, cmdStopped},  // stop_timeout, then SIGKILL
	pPidWait:   {nil, nil, pollPidFile, nil, nil},                              // the next look at pid_file
	pReloading: {exitReloading, reloadDone, reloadTimedOut, nil, nil},          // start_timeout for READY=1
	pPreStart:  {nil, nil, cmdTimedOut, nil, preExited},                        // start_timeout for each command
	pPostStop:  {nil, nil, cmdTimedOut, nil, postExited},                       // stop_timeout for each command
}

func (s *Service) onReq(r request) {
	if r.spec != nil && (r.op == opRestart || r.op == opConfigure) {
		s.st.nextSpec = r.spec // taken by the next start (run)
	}
	s.step(r.op.String(), onRequest[s.st.phase][r.op], r)
}

func (s *Service) event(ev event) { s.step(ev.String(), onEvent[s.st.phase][ev], request{}) }

func (s *Service) step(what string, a action, req request) {
	from := s.st.phase
	if a != nil {
		a(s, req)
	}
	if s.st.phase != from {
		s.log.Debug("transition", "on", what, "from", from.String(), "to", s.st.phase.String())
	}
}

// enter moves to phase p with its deadline (zero for none).
func (s *Service) enter(p phase, deadline time.Time) { s.st.phase, s.st.deadline = p, deadline }

// --- requests ------------------------------------------------------------------------------

var errStopping = errors.New("service is being stopped")

func answerOK(s *Service, req request) { s.answer(req.reply, reply{}) }

// configure: the reloaded config waits in nextSpec (onReq) for the next start.
func configure(s *Service, req request) { s.answer(req.reply, reply{}) }

func notRunning(s *Service, req request) {
	s.answer(req.reply, reply{err: fmt.Errorf("%s is %s, not running: start it instead of upgrading", s.spec().Name, s.state())})
}

func failNow(s *Service, req request) {
	s.st.lastErr, s.st.heldBy = req.err, ""
	s.enter(pFailed, time.Time{})
	s.log.Error("not started", "err", req.err)
	s.answer(req.reply, reply{})
}

// holdDown keeps a service that is not running down, with why: a service it conflicts with
// runs instead. Only one that is down or failed is held; one started meanwhile (initctl
// start) keeps running.
func holdDown(s *Service, req request) {
	s.st.heldBy, s.st.statusMsg, s.st.lastErr = req.other, req.err.Error(), nil
	s.enter(pDown, time.Time{})
	s.log.Info("not started", "why", req.err)
	s.answer(req.reply, reply{})
}

// startFresh begins an activation: an explicit start forgets earlier failures.
func startFresh(s *Service, req request) {
	s.st.failures, s.st.backoff, s.st.lastErr, s.st.heldBy = nil, s.spec().RestartDelay.Duration, nil, ""
	s.st.startWaiters = append(s.st.startWaiters, req.reply)
	s.run()
}

func awaitStart(s *Service, req request) { s.st.startWaiters = append(s.st.startWaiters, req.reply) }

// startLater answers when the stop under way is over and the service has started again.
func startLater(s *Service, req request) {
	s.st.startAfter = true
	s.st.startWaiters = append(s.st.startWaiters, req.reply)
}

func stopThenStart(s *Service, req request) {
	beginStop(s, request{op: opStop})
	startLater(s, req)
}

// stopIdle: nothing runs (or, after a recovered panic, only what is being killed).
func stopIdle(s *Service, req request) {
	if len(s.st.gens) > 0 {
		beginStop(s, req)
		return
	}
	s.enter(pDown, time.Time{})
	if req.flush {
		s.flushStore()
	}
	s.answer(req.reply, reply{})
}

// beginStop sends the stop signal to every generation; pStopping ends when all are reaped
// (settle, loop.go). A new version being started by an upgrade is killed first.
func beginStop(s *Service, req request) {
	if req.reply != nil {
		s.st.stopWaiters = append(s.st.stopWaiters, req.reply)
	}
	s.st.flushStore = s.st.flushStore || req.flush
	s.st.startAfter = false
	s.outcome(errStopping)
	s.reloadOutcome(errStopping)
	if s.st.up != nil {
		s.upgradeEvent(uStop)
	}
	sig, _ := config.SignalByName(s.spec().StopSignal)
	for _, g := range s.st.gens {
		s.stopSignal(g, sig)
	}
	s.st.killed, s.st.selfStopping = false, false
	s.enter(pStopping, time.Now().Add(s.spec().StopTimeout.Duration))
}

func awaitStop(s *Service, req request) {
	if s.st.startAfter { // a later stop wins over a start queued behind the first one
		s.st.startAfter = false
		s.outcome(errStopping)
	}
	addStopWaiter(s, req)
}

func addStopWaiter(s *Service, req request) {
	s.st.stopWaiters = append(s.st.stopWaiters, req.reply)
	s.st.flushStore = s.st.flushStore || req.flush
}

// --- the main generation ---------------------------------------------------------------------

func startAgain(s *Service, _ request) {
	s.st.restarts++
	s.run()
}

func becomeReady(s *Service, _ request) {
	s.markReady()
	s.log.Info("ready", "after", time.Since(s.st.started).Round(time.Millisecond))
}

func readyAgain(s *Service, _ request) {}

func exitStarting(s *Service, _ request) {
	g := s.st.cur
	s.endCur()
	reason := g.killedFor
	switch {
	case reason == "" && g.starter:
		reason = g.exit.String()
	case reason == "":
		reason = fmt.Sprintf("exited before it was ready: %s", g.exit)
	}
	err := errors.New(reason)
	s.st.lastErr = err
	s.outcome(err)
	s.log.Info("exited", "how", g.exit.String())
	s.restartOrEnd(true)
}

func exitRunning(s *Service, _ request) {
	g := s.st.cur
	s.endCur()
	s.log.Info("exited", "how", g.exit.String())
	if up := s.st.up; up != nil && up.step == uWaitReady {
		// The old version ended while the new one gets ready: the new one may still take
		// over; if it does not, the old one's exit decides (upgradeFailed).
		up.oldExit = &g.exit
		s.enter(pStarting, time.Time{}) // the upgrade's deadline is the one that counts
		return
	}
	failed := g.killedFor != "" || !s.exitOK(g.exit)
	if failed && g.killedFor == "" {
		s.st.lastErr = fmt.Errorf("%s", g.exit)
	}
	s.restartOrEnd(failed)
}

// exitStopping: the main generation is gone; pStopping ends once every generation is (settle).
func exitStopping(s *Service, _ request) { s.endCur() }

func startTimedOut(s *Service, _ request) {
	g := s.st.cur
	if g == nil || g.killedFor != "" {
		return
	}
	g.killedFor, g.killedBy = fmt.Sprintf("no READY=1 within start_timeout %s; killed", s.spec().StartTimeout), byTimeout
	if g.starter {
		g.killedFor = fmt.Sprintf("still running after start_timeout %s; killed", s.spec().StartTimeout)
	}
	s.log.Error("not ready in time", "start_timeout", s.spec().StartTimeout)
	s.st.lastErr = errors.New(g.killedFor)
	s.st.deadline = time.Time{}
	s.outcome(s.st.lastErr)
	killGroup(g)
}

// watchdogFired: watchdog_signal (SIGABRT by default, so a hung service can dump core), as
// the stop signal goes (kill_mode); SIGKILL when it is still there after stop_timeout.
func watchdogFired(s *Service, _ request) {
	g := s.st.cur
	if g.killedBy == byWatchdog {
		s.log.Warn("still running after the watchdog signal; killing it", "stop_timeout", s.spec().StopTimeout)
		killGroup(g)
		s.killCgroup()
		s.st.deadline = time.Time{}
		return
	}
	sig, _ := config.SignalByName(s.spec().WatchdogSignal)
	g.killedFor, g.killedBy = fmt.Sprintf("watchdog: no WATCHDOG=1 for %s; sent %s", s.st.wdInterval, unix.SignalName(sig)), byWatchdog
	s.log.Error("watchdog timeout", "interval", s.st.wdInterval, "signal", unix.SignalName(sig))
	s.st.lastErr = errors.New(g.killedFor)
	s.stopSignal(g, sig)
	s.st.deadline = time.Now().Add(s.spec().StopTimeout.Duration)
}

// stopSignal sends a stop (or watchdog) signal as kill_mode says: to every process of the
// generation, or (mixed) to its main process only — the rest get SIGKILL once it ended
// (reaped) or at stop_timeout.
func (s *Service) stopSignal(g *generation, sig unix.Signal) {
	if s.spec().KillMode != config.KillMixed {
		s.signalTree(g, sig, true)
		return
	}
	if !g.ended {
		_ = unix.Kill(g.pid, sig)
		_ = unix.Kill(g.pid, unix.SIGCONT)
	}
}

func stopTimedOut(s *Service, _ request) {
	s.log.Warn("did not stop in time; killing it", "stop_timeout", s.spec().StopTimeout)
	for _, g := range s.st.gens {
		killGroup(g)
	}
	s.killCgroup()
	s.st.killed = true
	s.st.deadline = time.Time{}
}

// --- helpers of the cells --------------------------------------------------------------------

// restartOrEnd applies the restart policy once the main generation has ended.
func (s *Service) restartOrEnd(failed bool) {
	if s.postThen(func() { s.restartOrEnd(failed) }) {
		return // exec_stop_post first
	}
	if !s.shouldRestart(failed) {
		s.enter(pDown, time.Time{})
		if failed {
			s.enter(pFailed, time.Time{})
		}
		s.outcome(fmt.Errorf("%s ended and is not restarted (restart = %s)", s.spec().Name, s.spec().Restart))
		return
	}
	if time.Since(s.st.started) >= s.spec().RestartWindow.Duration {
		s.st.backoff = s.spec().RestartDelay.Duration // it stayed up a while: start over
	}
	if s.overRestartLimit() {
		s.st.lastErr = fmt.Errorf("restarted more than %d times in %s; giving up (initctl start %s to try again)",
			s.spec().RestartLimit, s.spec().RestartWindow, s.spec().Name)
		s.log.Error("restart limit reached", "limit", s.spec().RestartLimit, "window", s.spec().RestartWindow)
		s.enter(pFailed, time.Time{})
		s.outcome(s.st.lastErr)
		return
	}
	s.log.Info("restarting", "in", s.st.backoff)
	s.enter(pBackoff, time.Now().Add(s.st.backoff))
	s.st.backoff = min(s.st.backoff*2, s.spec().RestartDelayMax.Duration)
}

func (s *Service) shouldRestart(failed bool) bool {
	end := s.st.lastEnd
	if end.status >= 0 && slices.Contains(s.spec().RestartPreventExitStatus, end.status) {
		return false
	}
	switch s.spec().Restart {
	case config.RestartAlways:
		return true
	case config.RestartOnFailure:
		return failed
	case config.RestartOnAbnormal:
		return end.kind == endSignal || end.kind == endTimeout || end.kind == endWatchdog
	case config.RestartOnWatchdog:
		return end.kind == endWatchdog
	default:
		return false
	}
}

// howItEnded classifies a generation's end for the restart policy.
func (s *Service) howItEnded(g *generation) howEnded {
	e := g.exit
	status := -1
	if e.Status.Exited() {
		status = e.Status.ExitStatus()
	}
	switch {
	case g.killedBy == byWatchdog:
		return howEnded{endWatchdog, status}
	case g.killedBy == byTimeout:
		return howEnded{endTimeout, status}
	case s.exitOK(e):
		return howEnded{endClean, status}
	case e.Status.Signaled():
		return howEnded{endSignal, -1}
	}
	return howEnded{endStatus, status}
}

// overRestartLimit records a restart and reports whether there were more than the limit
// within the window.
func (s *Service) overRestartLimit() bool {
	now := time.Now()
	kept := s.st.failures[:0]
	for _, t := range append(s.st.failures, now) {
		if now.Sub(t) < s.spec().RestartWindow.Duration {
			kept = append(kept, t)
		}
	}
	s.st.failures = kept
	return s.spec().RestartLimit > 0 && len(kept) > s.spec().RestartLimit
}

// run starts the program; failing to start is the attempt's outcome.
func (s *Service) run() {
	if s.st.nextSpec != nil {
		s.specp.Store(s.st.nextSpec)
		s.st.nextSpec = nil
	}
	s.st.wdInterval = s.spec().Watchdog.Duration // WATCHDOG_USEC= lasts one run, as in systemd
	if s.startPre() {
		return // run again once exec_start_pre succeeded
	}
	inherit := s.carriedChannel() // -1 unless a kexec carried connections for it
	g, err := s.spawn(s.spec(), s.spec().Exec[0], inherit)
	closeFd(&inherit)
	if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
		// baton's shortage, not the service's failure: it does not count towards
		// restart_limit, and the start is tried again (backing off) until fds are back.
		s.st.lastErr = fmt.Errorf("%w; trying again (not counted towards restart_limit)", err)
		s.warn("no-fds", "start failed: out of file descriptors; trying again", "err", err)
		s.outcome(s.st.lastErr)
		s.enter(pBackoff, time.Now().Add(s.st.backoff))
		s.st.backoff = min(s.st.backoff*2, s.spec().RestartDelayMax.Duration)
		return
	}
	if err != nil {
		s.st.lastErr, s.st.lastEnd = err, howEnded{endNoStart, -1}
		s.log.Error("start failed", "err", err)
		s.outcome(err)
		s.restartOrEnd(true)
		return
	}
	s.st.cur, s.st.started, s.st.lastErr = g, g.started, nil
	s.st.mainPid, s.st.statusMsg, s.st.selfStopping = 0, "", false
	s.st.completed = false
	s.log.Info("started", "pid", g.pid)
	if s.spec().Type == config.TypeSimple && s.spec().Ready == config.ReadyStarted {
		s.markReady()
		return
	}
	s.enter(pStarting, g.started.Add(s.spec().StartTimeout.Duration))
}

func (s *Service) markReady() {
	s.st.readyAt = time.Now()
	if s.st.firstRdy.IsZero() {
		s.st.firstRdy = s.st.readyAt
	}
	s.enter(pRunning, time.Time{})
	s.armWatchdog()
	s.outcome(nil)
}

// armWatchdog sets the running phase's deadline: the next WATCHDOG=1 is due by then (not
// once it fired: the deadline is then the SIGKILL's).
func (s *Service) armWatchdog() {
	if g := s.st.cur; g != nil && g.killedBy == byWatchdog {
		return
	}
	if s.st.phase == pRunning && s.st.wdInterval > 0 {
		s.st.deadline = time.Now().Add(s.st.wdInterval)
	}
}

// endCur records the main generation's end.
func (s *Service) endCur() {
	g := s.st.cur
	s.st.lastExit = &g.exit
	s.st.lastEnd = s.howItEnded(g)
	s.st.cur, s.st.selfStopping = nil, false
}

// outcome answers whoever waits for the current start attempt.
func (s *Service) outcome(err error) {
	for _, w := range s.st.startWaiters {
		s.answer(w, reply{err: err})
	}
	s.st.startWaiters = nil
}

func (s *Service) flushStore() {
	if n := s.store.Clear(); n > 0 {
		s.log.Info("fd store flushed", "count", n)
	}
}

// answer queues a reply; the loop sends it once the status that goes with it is published,
// so a caller that reads Status after its answer sees the state the answer was about.
func (s *Service) answer(ch chan<- reply, r reply) {
	if ch != nil {
		s.outbox = append(s.outbox, answered{ch, r})
	}
}

type answered struct {
	ch chan<- reply
	r  reply
}

// sendAnswers never blocks the loop: reply channels have room for their one answer.
func (s *Service) sendAnswers() {
	for _, a := range s.outbox {
		select {
		case a.ch <- a.r:
		default:
		}
	}
	s.outbox = nil
}
