package services

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/handoff"
	"github.com/baton-init/baton/system"
)

// phase is where the loop has the service; shown as a State.
type phase int

const (
	pDown      phase = iota // nothing runs, nothing is wanted
	pFailed                 // gave up: start error, restart limit, a requirement not met
	pBackoff                // the program ended; waiting to start it again
	pStarting               // started, not ready yet
	pRunning                // ready
	pStopping               // stop signal sent; waiting for every generation to end
	pPidWait                // forking: the started process exited 0; waiting for pid_file to name its daemon
	pReloading              // notify: RELOADING=1 (or the reload signal) until READY=1
	pPreStart               // an exec_start_pre command runs (prepost.go)
	pPostStop               // an exec_stop_post command runs, after the service ended
	nPhases
)

var phaseState = [nPhases]State{pDown: Stopped, pFailed: Failed, pBackoff: Starting, pStarting: Starting,
	pRunning: Running, pStopping: Stopping, pPidWait: Starting, pReloading: Reloading, pPreStart: Starting, pPostStop: Stopping}

var phaseNames = [nPhases]string{"down", "failed", "backoff", "starting", "running", "stopping", "pid-wait", "reloading",
	"pre-start", "post-stop"}

func (p phase) String() string { return phaseNames[p] }

// generation is one process of the service and what it started. There is one, except during
// an upgrade, when the new version runs beside the old one on the same sockets, and during a
// stop, until every generation has been reaped.
type generation struct {
	pid     int
	pgid    int    // its process group, signalled with it; 0 for none of its own (never baton's)
	starter bool   // forking or oneshot: its exit, not READY=1, decides readiness
	adopted bool   // forking: the daemon named by pid_file, re-parented to baton
	exec    string // the binary it runs
	started time.Time
	ctl     int // baton's end of the control channel with the process
	// killedFor is why baton killed it (start timeout, watchdog); "" when it ended by itself.
	killedFor string
	killedBy  killCause
	exit      system.Exit // valid once ended
	ended     bool
	endedAt   time.Time
}

// killCause is why baton killed a generation, for the restart policies that tell them apart.
type killCause int

const (
	byNone     killCause = iota
	byTimeout            // start_timeout
	byWatchdog           // no WATCHDOG=1 in time
)

// howEnded is how the main process's last run ended, as the restart policies tell it apart
// (systemd's table of Restart= against exit causes).
type howEnded struct {
	kind   endKind
	status int // the exit status when it exited; -1 otherwise
}

type endKind int

const (
	endClean    endKind = iota // status 0 or a success_exit_status
	endStatus                  // another exit status
	endSignal                  // killed by a signal (not by baton's timeouts)
	endTimeout                 // baton killed it: start_timeout, or pid_file never named a daemon
	endWatchdog                // baton killed it: the watchdog fired
	endNoStart                 // it could not be started
)

// state is everything the loop knows about its service. Only the loop reads or writes it.
type state struct {
	phase phase
	gens  []*generation // every generation not reaped yet
	// ended are the generations reaped lately: a datagram a process sent just before it
	// exited may be read after its exit is handled; it is late, not forged.
	ended        []*generation
	cur          *generation // the main process, nil when none
	up           *upgrade    // an upgrade under way
	selfStopping bool        // STOPPING=1 from the running service

	// The phase's deadline (restart at, ready by, next WATCHDOG=1 by, SIGKILL at); zero for
	// none. The loop's one timer fires at it or at the upgrade's, whichever is nearer.
	deadline   time.Time
	wdInterval time.Duration

	// Restart policy.
	backoff  time.Duration
	failures []time.Time // recent restarts, for the restart limit

	// Who waits for what.
	startWaiters []chan<- reply  // answered at the attempt's outcome: ready or failed
	reloadWaiter []chan<- reply  // answered when a reload is over: READY=1, or it failed
	stopWaiters  []chan<- reply  // answered when no generation is left
	startAfter   bool            // start again once stopped (restart, or a start during a stop)
	nextSpec     *config.Service // a reloaded config, taken at the next start
	flushStore   bool            // an explicit stop empties the fd store once stopped
	killed       bool            // this stop needed SIGKILL
	// failAfterStop: the stop is the cleanup after a recovered panic; the service ends failed.
	failAfterStop error

	// What status shows.
	cgroup        string
	started       time.Time // of the current run
	readyAt       time.Time
	firstUp       time.Time // first start this boot, for the timeline
	firstRdy      time.Time
	completed     bool // oneshot: its last run exited successfully
	restarts      int
	upgrades      int
	lastExit      *system.Exit
	lastEnd       howEnded // for the restart policy
	lastErr       error
	statusMsg     string // the service's own STATUS=; a hold's reason
	heldBy        string // stopped because this conflicting service runs (opHold)
	mainPid       int    // MAINPID= as the service reported it
	notifyDropped int    // notify datagrams refused: not from the service's processes
	notifyLate    int    // from a generation that is ending (old version, a stopping service)

	warns map[string]*warnKind // rate-limited warnings (warn.go)

	cmds cmdState // exec_start_pre and exec_stop_post (prepost.go)
}

func newState(spec config.Service) state {
	return state{phase: pDown, backoff: spec.RestartDelay.Duration, wdInterval: spec.Watchdog.Duration}
}

// input is what the loop reads: a request, an exit, a notify datagram, a handoff answer.
type input interface{ isInput() }

type op int // a request's column in onRequest

const (
	opStart op = iota
	opStop
	opRestart
	opUpgrade
	opFail      // not started: something outside it, e.g. a requirement not met
	opConfigure // a reloaded config, for the next start (the service is not running)
	opReload    // reload_signal to the main process (notify: and wait for READY=1)
	opKill      // a signal to the service's processes, as asked
	opHold      // not started: a service it conflicts with runs instead (deps.go)
	nOps
)

var opNames = [nOps]string{"start", "stop", "restart", "upgrade", "fail", "configure", "reload", "kill", "hold"}

func (o op) String() string { return opNames[o] }

type request struct {
	op    op
	exec  string          // opUpgrade: the new binary ("" keeps it)
	spec  *config.Service // opUpgrade, opRestart: the config to run from now on (nil: keep it)
	err   error           // opFail, opHold: why
	other string          // opHold: the service it conflicts with, which runs
	flush bool            // opStop: empty the fd store too
	sig   unix.Signal     // opKill
	main  bool            // opKill: the main process only
	reply chan<- reply
}

type reply struct {
	err     error
	killed  bool
	upgrade UpgradeReport
}

// exited is a generation's main process reaped.
type exited struct {
	gen  *generation
	exit system.Exit
}

// notified is a datagram on the notify socket and what /proc said of its sender (read by the
// notify goroutine, so the loop never walks /proc).
type notified struct {
	msg     handoff.Message
	err     error // what went wrong reading it (truncated control data, too large)
	sender  sender
	mainPid sender // the process MAINPID= names, if any
}

// acked is the old version's answer to a handoff offer (or its absence, within ackTimeout).
type acked struct {
	gen *generation
	ok  bool
}

func (request) isInput()  {}
func (exited) isInput()   {}
func (notified) isInput() {}
func (acked) isInput()    {}
