package services

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/handoff/client"
	"github.com/baton-init/baton/system"
)

// TestModel drives one service through a random sequence of operations against real processes
// (start, stop, restart, upgrade, kill -9 of either generation, crashes, exits, notify messages),
// some of them overlapping, and checks after every step what must always hold. The sequence
// follows -model.seed: the same seed runs the same operations in the same order, though what
// they meet depends on timing, so a failure replays often rather than always.
var (
	modelSeed  = flag.Uint64("model.seed", 0, "TestModel: seed of the random sequence (0: from the clock; always logged)")
	modelSteps = flag.Int("model.steps", 300, "TestModel: number of random steps (-short without this flag: 100)")
)

const (
	// An operation that takes longer is hung. Start, stop and restart queue on the service:
	// three of them (two async, one not) each up to a stop timeout plus a start timeout.
	modelOpTimeout = 15 * time.Second
	modelSettle    = 2 * time.Second       // how long a process-based invariant may take to hold again
	modelPoll      = 15 * time.Millisecond // processes end and are reaped asynchronously: poll
	modelStepLimit = 60 * time.Second      // a whole step, which may wait for several operations
	modelMaxAsync  = 4                     // operations in flight
	modelMaxQueued = 2                     // of them start, stop or restart, which queue on the service
	modelRing      = 40
)

// model is the test's side: the supervisor, the operations in flight and the recent steps.
type model struct {
	t       *testing.T
	seed    uint64
	rng     *rand.Rand
	sv      *Supervisor
	s       *Service
	id      string          // MODEL_ID in the environment of every process of the service
	dir     string          // command sockets, and the "manual" file that delays READY=1
	cmdFd   int             // datagram socket commands are sent from
	fdBase  map[string]bool // /proc/self/fd entries with the supervisor idle (fdSet)
	began   time.Time
	step    int
	opSeq   int
	flight  []*modelOp
	ringMu  sync.Mutex // the ring is also read by a step's guard
	ring    []string
	tally   map[string]int // operations by outcome, and what the checks saw: for the summary
	manual  bool           // new processes wait for a "ready" command
	exitArm *time.Timer    // ends the binary if cleanup hangs after a failure
}

type modelOp struct {
	id, step int
	name     string
	start    time.Time
	done     chan struct{}
	err      error
}

func TestModel(t *testing.T) {
	seed := *modelSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay: go test -run 'TestModel$' ./services/ -model.seed=%d)", seed, seed)
	m := newModel(t, seed)
	steps := modelStepCount()
	for m.step = 1; m.step <= steps; m.step++ {
		// A generator per step: how many numbers a step draws depends on what it finds, which
		// depends on timing; the operation each step runs must not.
		m.rng = rand.New(rand.NewPCG(seed, uint64(m.step)))
		m.guarded(func() {
			m.reap()
			op := modelOps[m.pickOp()]
			m.note("%s", op.name)
			op.do(m)
			m.check()
		})
	}
	m.guarded(m.finish)
}

// guarded runs one step. Each wait in it is bounded; should one hang anyway (say on a
// deadlocked Status), the goroutines and the last steps are printed and the binary exits.
func (m *model) guarded(step func()) {
	n := m.step
	guard := time.AfterFunc(modelStepLimit, func() {
		fmt.Fprintf(os.Stderr, "TestModel (seed %d): step %d has not finished after %s; the last steps:\n%s\n",
			m.seed, n, modelStepLimit, m.recent())
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
		for _, p := range m.procs() {
			unix.Kill(p.pid, unix.SIGKILL)
		}
		os.Exit(1)
	})
	defer guard.Stop()
	step()
}

func modelStepCount() int {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "model.steps" })
	if testing.Short() && !set {
		return 100
	}
	return *modelSteps
}

func newModel(t *testing.T, seed uint64) *model {
	m := &model{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, 0)), dir: t.TempDir(), began: time.Now(), tally: map[string]int{},
		id: fmt.Sprintf("%d-%d-%d", os.Getpid(), seed, time.Now().UnixNano())}
	// Registered before the supervisor's cleanup, so it runs after it: the cleanup finished.
	t.Cleanup(func() {
		if m.exitArm != nil {
			m.exitArm.Stop()
		}
	})
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	m.cmdFd = fd
	t.Cleanup(func() { unix.Close(fd) })
	svc := modelConfig(m.rng, m.id, m.dir)
	t.Logf("config: restart=%s restart_limit=%d watchdog=%s", svc.Restart, svc.RestartLimit, svc.Watchdog)
	m.sv = supervisor(t, svc)
	m.s = m.sv.Service(svc.Name)
	m.fdBase = fdSet(t)
	return m
}

func modelConfig(rng *rand.Rand, id, dir string) config.Service {
	exe, env := helperExec("model")
	svc := config.Service{Name: "model", Exec: exe, Ready: config.ReadyNotify,
		Env:     append(env, "MODEL_ID="+id, "MODEL_DIR="+dir, "MODEL_READY=file"),
		Restart: config.RestartOnFailure, RestartLimit: 1000, RestartWindow: dur(10 * time.Second),
		RestartDelay: dur(20 * time.Millisecond), RestartDelayMax: dur(100 * time.Millisecond),
		StartTimeout: dur(2 * time.Second), StopTimeout: dur(time.Second), UpgradeTimeout: dur(2 * time.Second)}
	if rng.IntN(2) == 0 {
		svc.Restart = config.RestartAlways
	}
	if rng.IntN(4) == 0 {
		svc.RestartLimit = 3 // trips now and then: exercises failed, and start after failed
	}
	if rng.IntN(3) == 0 {
		svc.Watchdog = dur(time.Duration(500+rng.IntN(1000)) * time.Millisecond)
	}
	return svc
}

// modelOps are the steps, with their weights.
var modelOps = []struct {
	name   string
	weight int
	do     func(m *model)
}{
	{"start", 12, func(m *model) { m.call("start", m.async(2, true), func() error { return m.sv.Start("model") }) }},
	{"stop", 6, (*model).opStop},
	{"restart", 5, func(m *model) { m.call("restart", m.async(2, true), func() error { return m.sv.Restart("model") }) }},
	{"upgrade", 14, func(m *model) {
		m.call("upgrade", m.async(5, false), func() error { _, err := m.sv.Upgrade("model", ""); return err })
	}},
	{"kill -9", 12, func(m *model) { m.signal(unix.SIGKILL) }},
	{"ready", 10, func(m *model) { m.command("ready") }},
	{"stopping", 3, func(m *model) { m.command("stopping") }},
	// Reload (pReloading): the signal (the model service ignores SIGHUP) and RELOADING=1; the
	// next "ready" ends it, else start_timeout does and the reload fails.
	{"reload", 4, func(m *model) {
		m.call("reload", m.async(10, false), func() error { return m.sv.ReloadService("model") })
	}},
	{"reloading", 2, func(m *model) { m.command("reloading") }},
	{"kill -CONT", 1, func(m *model) {
		m.call("kill", false, func() error { return m.sv.Kill("model", unix.SIGCONT, m.rng.IntN(2) == 0) })
	}},
	{"watchdog", 6, func(m *model) { m.command("watchdog") }},
	{"exit", 3, func(m *model) { m.command("exit " + strconv.Itoa(m.rng.IntN(3))) }},
	{"crash", 3, func(m *model) { m.command("crash") }},
	{"ignore SIGTERM", 1, func(m *model) { m.command("ignore-term") }},
	{"manual ready", 3, (*model).manualReady},
	{"pause", 8, func(m *model) { time.Sleep(time.Duration(m.rng.IntN(60)) * time.Millisecond) }},
	{"settle", 3, func(m *model) { m.settle() }},
}

func (m *model) pickOp() int {
	total := 0
	for _, op := range modelOps {
		total += op.weight
	}
	n := m.rng.IntN(total)
	for i, op := range modelOps {
		if n < op.weight {
			return i
		}
		n -= op.weight
	}
	panic("unreachable")
}

// async decides whether an operation runs beside the next steps (1 in n) rather than before
// them. While new processes wait for a "ready" command, an operation that waits for readiness
// must not block the steps that would send it.
func (m *model) async(n int, queues bool) bool {
	if len(m.flight) >= modelMaxAsync || queues && m.queued() >= modelMaxQueued {
		return false
	}
	return m.manual || m.rng.IntN(n) != 0
}

func (m *model) queued() int {
	n := 0
	for _, op := range m.flight {
		if op.name == "start" || op.name == "stop" || op.name == "restart" {
			n++
		}
	}
	return n
}

func (m *model) opStop() {
	async := len(m.flight) < modelMaxAsync && m.queued() < modelMaxQueued && m.rng.IntN(4) == 0
	// A start or restart still pending may run after the stop: then processes are expected.
	startPending := slices.ContainsFunc(m.flight, func(op *modelOp) bool {
		return (op.name == "start" || op.name == "restart") && !op.finished()
	})
	err, returned := m.call("stop", async, func() error { _, err := m.sv.Stop("model"); return err })
	if returned && err == nil && !startPending {
		m.checkStopped()
	}
}

// manualReady decides whether new processes send READY=1 at once or wait for a "ready"
// command; mostly at once, or every start would wait for the command.
func (m *model) manualReady() {
	m.manual = m.rng.IntN(4) == 0
	path := filepath.Join(m.dir, "manual")
	if m.manual {
		os.WriteFile(path, nil, 0o644)
	} else {
		os.Remove(path)
	}
	m.note("new processes wait for a ready command: %v", m.manual)
}

// call runs an operation. Unless async, it waits for it and returns its error and true; an
// async one is collected by a later reap or settle.
func (m *model) call(name string, async bool, fn func() error) (error, bool) {
	m.opSeq++
	op := &modelOp{id: m.opSeq, step: m.step, name: name, start: time.Now(), done: make(chan struct{})}
	go func() {
		defer close(op.done)
		op.err = fn()
	}()
	if async {
		m.flight = append(m.flight, op)
		m.note("  %s #%d runs beside the next steps", name, op.id)
		return nil, false
	}
	m.await(op)
	m.record(op)
	return op.err, true
}

func (op *modelOp) finished() bool {
	select {
	case <-op.done:
		return true
	default:
		return false
	}
}

func (op *modelOp) result() string {
	s := "ok"
	if op.err != nil {
		s = op.err.Error()
	}
	return fmt.Sprintf("%s (%s)", s, time.Since(op.start).Round(time.Millisecond))
}

// await waits for op within what is left of its modelOpTimeout.
func (m *model) await(op *modelOp) {
	t := time.NewTimer(modelOpTimeout - time.Since(op.start))
	defer t.Stop()
	select {
	case <-op.done:
	case <-t.C:
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
		m.fail("%s #%d (step %d) has not returned after %s: hung (goroutines above)", op.name, op.id, op.step, modelOpTimeout)
	}
}

// record notes how an operation ended, and counts it for the summary.
func (m *model) record(op *modelOp) {
	if op.step == m.step {
		m.note("  %s: %s", op.name, op.result())
	} else {
		m.note("  %s #%d (step %d) returned: %s", op.name, op.id, op.step, op.result())
	}
	outcome := "ok"
	if op.err != nil {
		outcome = "error"
	}
	m.tally[op.name+" "+outcome]++
}

// reap collects the async operations that returned, and fails on one that is hung.
func (m *model) reap() {
	m.flight = slices.DeleteFunc(m.flight, func(op *modelOp) bool {
		if op.finished() {
			m.record(op)
			return true
		}
		if time.Since(op.start) > modelOpTimeout {
			m.await(op)
		}
		return false
	})
}

// settle waits for every operation in flight.
func (m *model) settle() {
	for _, op := range m.flight {
		m.await(op)
	}
	m.reap()
}

// note adds a line to the ring of recent steps printed on a failure.
func (m *model) note(format string, args ...any) {
	line := fmt.Sprintf("%4d %6dms  ", m.step, time.Since(m.began).Milliseconds()) + fmt.Sprintf(format, args...)
	m.ringMu.Lock()
	defer m.ringMu.Unlock()
	if len(m.ring) == modelRing {
		m.ring = m.ring[1:]
	}
	m.ring = append(m.ring, line)
}

func (m *model) recent() string {
	m.ringMu.Lock()
	defer m.ringMu.Unlock()
	return strings.Join(m.ring, "\n")
}

func (m *model) fail(format string, args ...any) {
	m.t.Helper()
	m.t.Logf("seed %d failed at step %d; the last steps:\n%s", m.seed, m.step, m.recent())
	m.t.Logf("status: %s", modelStatus(m.s.Status()))
	m.t.Logf("processes of the service: %v", m.procs())
	// Kill them all, so the supervisor's cleanup does not wait on them; and should it hang
	// anyway, end the binary rather than wait for go test's timeout.
	for _, p := range m.procs() {
		unix.Kill(p.pid, unix.SIGKILL)
	}
	m.exitArm = time.AfterFunc(30*time.Second, func() {
		fmt.Fprintf(os.Stderr, "TestModel (seed %d): the supervisor's cleanup hangs after the failure; exiting\n", m.seed)
		os.Exit(1)
	})
	m.t.Fatalf("seed %d, step %d: "+format, append([]any{m.seed, m.step}, args...)...)
}

func modelStatus(st Status) string {
	return fmt.Sprintf("state=%s pid=%d generations=%+v restarts=%d upgrades=%d notify_dropped=%d error=%q last_exit=%q",
		st.State, st.Pid, st.Generations, st.Restarts, st.Upgrades, st.NotifyDropped, st.Error, st.LastExit)
}

// target picks a process to act on: the current generation, the old or new one of an upgrade,
// or now and then any process of the service, which baton may not know.
func (m *model) target(cmd string) (string, int) {
	type cand struct {
		role string
		pid  int
	}
	st := m.s.Status()
	var cs []cand
	if st.Pid != 0 {
		cs = append(cs, cand{"current", st.Pid})
	}
	for _, g := range st.Generations {
		if cmd == "ready" && g.Role == "new" && !g.Ready && m.rng.IntN(4) != 0 {
			return "new", g.Pid // the one waiting for it
		}
		cs = append(cs, cand{g.Role, g.Pid})
	}
	if ps := m.procs(); len(ps) > 0 && (len(cs) == 0 || m.rng.IntN(5) == 0) {
		p := ps[m.rng.IntN(len(ps))]
		cs = append(cs, cand{"process", p.pid})
	}
	if len(cs) == 0 {
		return "", 0
	}
	c := cs[m.rng.IntN(len(cs))]
	return c.role, c.pid
}

func (m *model) signal(sig unix.Signal) {
	role, pid := m.target("")
	if pid == 0 {
		m.note("  no process")
		return
	}
	err := unix.Kill(pid, sig)
	m.note("  %s to %s %d: %v", unix.SignalName(sig), role, pid, err)
}

// command sends cmd to a process's command socket; one that has not opened it yet, or has
// ended, does not get it, which is one more interleaving.
func (m *model) command(cmd string) {
	role, pid := m.target(cmd)
	if pid == 0 {
		m.note("  no process")
		return
	}
	addr := &unix.SockaddrUnix{Name: filepath.Join(m.dir, strconv.Itoa(pid)+".sock")}
	err := unix.Sendto(m.cmdFd, []byte(cmd), unix.MSG_DONTWAIT, addr)
	m.note("  %q to %s %d: %v", cmd, role, pid, err)
}

// modelProc is a live process of the service, found by MODEL_ID in its environment.
type modelProc struct {
	pid, pgid int
	comm      string
}

func (p modelProc) String() string { return fmt.Sprintf("%d(%s,pgid %d)", p.pid, p.comm, p.pgid) }

func (m *model) procs() []modelProc {
	want := []byte("MODEL_ID=" + m.id)
	ents, _ := os.ReadDir("/proc")
	var out []modelProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !slices.ContainsFunc(bytes.Split(env, []byte{0}), func(v []byte) bool { return bytes.Equal(v, want) }) {
			continue
		}
		st, err := system.ReadProcStat(pid)
		if err != nil || st.State == 'Z' || st.State == 'X' { // zombies are ended; reaping them is not baton's job alone
			continue
		}
		out = append(out, modelProc{pid: pid, pgid: st.Pgrp, comm: st.Comm})
	}
	return out
}

// check fails the test unless the invariants hold. A violation seen in the processes may be
// the moment between a kill and the reaping, so those are retried for modelSettle; one in a
// status snapshot alone is not.
func (m *model) check() {
	deadline := time.Now().Add(modelSettle)
	var seen string // the last violation, rather than a view that changed under the scan
	for {
		msg, hard := m.invariants()
		switch {
		case msg == "":
			return
		case msg != errScanRaced || seen == "":
			seen = msg
		}
		if hard || time.Now().After(deadline) {
			m.fail("%s", seen)
		}
		time.Sleep(modelPoll)
	}
}

const errScanRaced = "status changed during every process scan"

func (m *model) invariants() (msg string, hard bool) {
	st := m.s.Status()
	if msg := statusInvariants(st); msg != "" {
		return msg, true
	}
	procs := m.procs()
	after := m.s.Status()
	if msg := statusInvariants(after); msg != "" {
		return msg, true
	}
	if !slices.Equal(knownPids(st), knownPids(after)) {
		return errScanRaced, false
	}
	known := knownPids(st)
	if len(st.Generations) > 0 {
		m.tally["invariant checks during an upgrade"]++
	}
	var mains []modelProc
	for _, p := range procs {
		if p.pid == p.pgid {
			mains = append(mains, p)
		}
		if !slices.Contains(known, p.pgid) {
			return fmt.Sprintf("process %s is not known to baton (%s; processes %v)", p, modelStatus(st), procs), false
		}
	}
	if len(st.Generations) == 0 && len(mains) > 1 {
		return fmt.Sprintf("%d generations alive outside an upgrade: %v (%s)", len(mains), mains, modelStatus(st)), false
	}
	if len(mains) > 2 {
		return fmt.Sprintf("%d generations alive during an upgrade: %v (%s)", len(mains), mains, modelStatus(st)), false
	}
	return "", false
}

// knownPids are the process groups baton knows for the service: its pid and its generations.
func knownPids(st Status) []int {
	var out []int
	if st.Pid != 0 {
		out = append(out, st.Pid)
	}
	for _, g := range st.Generations {
		out = append(out, g.Pid)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func statusInvariants(st Status) string {
	switch st.State {
	case Stopped, Starting, Running, Stopping, Failed, Reloading:
	default:
		return fmt.Sprintf("unknown state %q (%s)", st.State, modelStatus(st))
	}
	// Both generations while both run; the one that is left when the other ended first.
	seen := map[string]int{}
	for _, g := range st.Generations {
		if (g.Role != "old" && g.Role != "new") || seen[g.Role] != 0 || g.Pid <= 0 {
			return fmt.Sprintf("generations are not at most one old and one new, each with a pid: %s", modelStatus(st))
		}
		seen[g.Role] = g.Pid
	}
	if seen["old"] != 0 && seen["old"] == seen["new"] {
		return fmt.Sprintf("status shows pid %d as both the old and the new generation (%s)", seen["old"], modelStatus(st))
	}
	return ""
}

// checkStopped checks what a stop that returned promises: state stopped, no process left, and
// (with nothing else in flight) every fd baton opened for the service's runs closed again.
func (m *model) checkStopped() {
	if st := m.s.Status(); st.State != Stopped || st.Pid != 0 || len(st.Generations) != 0 {
		m.fail("after a stop: %s, want stopped without a pid", modelStatus(st))
	}
	m.eventually("no process of the service remains after a stop", func() string {
		if ps := m.procs(); len(ps) > 0 {
			return fmt.Sprintf("still alive: %v", ps)
		}
		return ""
	})
	m.tally["stops checked"]++
	if len(m.flight) > 0 {
		return
	}
	m.tally["fd counts checked"]++
	// Compared by number and target, not counted: fds an earlier test left closing when the
	// baseline was taken made a count fall below it.
	m.eventually("baton's fds are back to the baseline after a stop", func() string {
		if extra := newFds(m.t, m.fdBase); len(extra) > 0 {
			return fmt.Sprintf("open and not in the baseline: %v; all: %s", extra, fdList())
		}
		return ""
	})
}

// eventually retries cond (which returns what is wrong, or "") for modelSettle.
func (m *model) eventually(what string, cond func() string) {
	deadline := time.Now().Add(modelSettle)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			m.fail("%s: %s", what, msg)
		}
		time.Sleep(modelPoll)
	}
}

func (m *model) finish() {
	m.settle()
	m.call("stop all", false, func() error {
		if killed := m.sv.StopAll(); len(killed) > 0 {
			return fmt.Errorf("killed %v", killed)
		}
		return nil
	})
	m.checkStopped()
	st := m.s.Status()
	m.t.Logf("%d steps in %s: %d restarts, %d upgrades, %d notify datagrams dropped; %v",
		m.step-1, time.Since(m.began).Round(time.Millisecond), st.Restarts, st.Upgrades, st.NotifyDropped, m.tally)
}

func fdList() string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		out = append(out, e.Name()+"→"+target)
	}
	return strings.Join(out, " ")
}

// modelService is the program TestModel supervises. It starts a child in its process group (a
// stop must end a tree), takes commands on the datagram socket $MODEL_DIR/<pid>.sock, and sends
// READY=1 at once unless MODEL_READY says to wait for a "ready" command ("command", or "file":
// while $MODEL_DIR/manual exists). On SIGTERM it exits 0 after up to 50 ms.
func modelService() {
	dir := os.Getenv("MODEL_DIR")
	term := make(chan os.Signal, 1)
	signal.Notify(term, unix.SIGTERM)
	signal.Ignore(unix.SIGHUP) // initctl reload's signal; RELOADING=1 comes as a command
	if err := exec.Command("sleep", "1000").Start(); err != nil {
		fmt.Println("model: child:", err)
	}
	path := filepath.Join(dir, strconv.Itoa(os.Getpid())+".sock")
	os.Remove(path) // left by an earlier process with this pid
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		fmt.Println("model: command socket:", err)
		os.Exit(3)
	}
	wait := os.Getenv("MODEL_READY") == "command"
	if os.Getenv("MODEL_READY") == "file" {
		_, err := os.Stat(filepath.Join(dir, "manual"))
		wait = err == nil
	}
	if !wait {
		client.Ready()
	}
	go func() {
		<-term
		time.Sleep(time.Duration(rand.IntN(50)) * time.Millisecond)
		if next := client.Successor(); next != nil {
			next.Close() // no connections to hand over
		}
		os.Remove(path)
		os.Exit(0)
	}()
	buf := make([]byte, 64)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			fmt.Println("model: command socket:", err)
			os.Exit(4)
		}
		modelCommand(strings.Fields(string(buf[:n])))
	}
}

func modelCommand(cmd []string) {
	if len(cmd) == 0 {
		return
	}
	switch cmd[0] {
	case "ready":
		client.Ready()
	case "stopping":
		client.Stopping()
	case "reloading":
		client.Notify("RELOADING=1")
	case "watchdog":
		client.Watchdog()
	case "ignore-term":
		signal.Ignore(unix.SIGTERM)
	case "exit":
		code, _ := strconv.Atoi(cmd[len(cmd)-1])
		os.Exit(code)
	case "crash":
		modelCrash()
	}
}

// modelCrash dies of SIGSEGV, as a crash does. Go's runtime handles a SIGSEGV sent by kill
// itself, so the default action is restored first (struct sigaction as the kernel reads it:
// handler SIG_DFL, flags, restorer, mask); no core file is written.
func modelCrash() {
	unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
	var act [4]uint64
	if _, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGSEGV), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0); errno != 0 {
		fmt.Println("model: rt_sigaction:", errno)
	}
	unix.Kill(os.Getpid(), unix.SIGSEGV)
	time.Sleep(time.Second)
	fmt.Println("model: still alive after SIGSEGV")
	os.Exit(5)
}
