package services

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
)

// Tests of the core's guarantees, each for a defect of the mutex-based supervisor it replaced
// (issue 8). The loop is held or made to panic through testHook to force an interleaving.

// holdLoop installs a hook that stops the loop of service name before the first input match
// accepts, and returns a channel closed once it is held and a function that releases it.
func holdLoop(t *testing.T, name string, match func(input) bool) (held <-chan struct{}, release func()) {
	t.Helper()
	h, r := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func(s *Service, in input) {
		if s.Spec().Name != name || !match(in) {
			return
		}
		first := false
		once.Do(func() { first = true })
		if first {
			close(h)
			<-r
		}
	}
	testHook.Store(&hook)
	var rel sync.Once
	release = func() { rel.Do(func() { close(r) }) }
	t.Cleanup(func() { release(); testHook.Store(nil) })
	return h, release
}

func isUpgrade(in input) bool {
	r, ok := in.(request)
	return ok && r.op == opUpgrade
}

func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

func alive(pid int) bool {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(st), ')')
	return i > 0 && len(st) > i+2 && st[i+2] != 'Z'
}

func testLog() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Defect 1, one order: an upgrade accepted while the old version's exit is already on its way
// (the old code's run loop read `upgrading`, released the lock, then saw the exit). The loop
// takes the upgrade first, then the exit: the new version takes over once ready; nothing is
// left untracked.
func TestUpgradeAcceptedWhileOldVersionExits(t *testing.T) {
	exe, env := helperExec("notify-ready")
	sv := supervisor(t, config.Service{Name: "up", Ready: config.ReadyNotify, Exec: exe, Env: env,
		UpgradeTimeout: dur(10 * time.Second)})
	if r := sv.StartAll(); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	s := sv.Service("up")
	oldPid := s.Status().Pid
	held, release := holdLoop(t, "up", isUpgrade)
	done := make(chan error, 1)
	go func() { _, err := sv.Upgrade("up", ""); done <- err }()
	wait(t, held, "the loop to hold the upgrade")
	unix.Kill(oldPid, unix.SIGKILL)
	for alive(oldPid) { // reaped: its exit is queued behind the upgrade
		runtime.Gosched()
	}
	release()
	if err := wait(t, done, "the upgrade"); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	st := s.Status()
	if st.State != Running || st.Pid == oldPid || st.Pid == 0 || len(st.Generations) != 0 || !alive(st.Pid) {
		t.Fatalf("after the upgrade: %+v", st)
	}
	if !strings.Contains(st.LastExit, "SIGKILL") {
		t.Errorf("the old version's end is not recorded: %+v", st)
	}
	newPid := st.Pid
	if _, err := sv.Stop("up"); err != nil {
		t.Fatal(err)
	}
	waitGone(t, newPid)
}

// Defect 1, the other order: the exit is handled first; the upgrade that follows is refused
// (restart = never: the service has failed), and no process of it is started.
func TestUpgradeAfterOldVersionExitedIsRefused(t *testing.T) {
	exe, env := helperExec("notify-ready")
	sv := supervisor(t, config.Service{Name: "up", Ready: config.ReadyNotify, Exec: exe, Env: env})
	if r := sv.StartAll(); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	s := sv.Service("up")
	oldPid := s.Status().Pid
	done := make(chan error, 1)
	held, release := holdLoop(t, "up", func(in input) bool { _, ok := in.(exited); return ok })
	unix.Kill(oldPid, unix.SIGKILL)
	wait(t, held, "the loop to hold the exit")
	go func() { _, err := sv.Upgrade("up", ""); done <- err }()
	release()
	err := wait(t, done, "the upgrade")
	if err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("upgrade of an ended service: %v", err)
	}
	if st := s.Status(); st.State != Failed || st.Pid != 0 || len(st.Generations) != 0 {
		t.Fatalf("status %+v", st)
	}
}

// Defect 2: a panic in a service's loop marks that service failed, kills its processes, answers
// whoever waits, and the loop keeps answering: a later start works.
func TestPanicInLoopFailsTheServiceAndKeepsAnswering(t *testing.T) {
	exe, env := helperExec("notify-ready")
	sv := supervisor(t, config.Service{Name: "p", Ready: config.ReadyNotify, Exec: exe, Env: env})
	var pid int
	hook := func(s *Service, in input) {
		if n, ok := in.(notified); ok && n.msg.Fields["READY"] == "1" {
			pid = s.st.cur.pid
			panic("injected")
		}
	}
	testHook.Store(&hook)
	t.Cleanup(func() { testHook.Store(nil) })
	err := sv.Start("p")
	if err == nil || !strings.Contains(err.Error(), "internal error in baton (panic: injected)") {
		t.Fatalf("start through a panic: %v", err)
	}
	testHook.Store(nil)
	s := sv.Service("p")
	// Stopping while the killed process ends, then failed.
	if !s.WaitUntil(func(st Status) bool { return st.State == Failed && st.Pid == 0 }, 5*time.Second) {
		t.Fatalf("status after the panic: %+v", s.Status())
	}
	if st := s.Status(); !strings.Contains(st.Error, "panic: injected") {
		t.Fatalf("status after the panic: %+v", st)
	}
	waitGone(t, pid)
	if err := sv.Start("p"); err != nil {
		t.Fatalf("start after the panic: %v", err)
	}
	if st := s.Status(); st.State != Running || st.Pid == pid {
		t.Fatalf("after the second start: %+v", st)
	}
}

// Defect 6: the old version's STOPPING=1 during an upgrade is accepted and attributed, not
// counted as forged.
func TestOldVersionNotifyDuringUpgradeIsNotForged(t *testing.T) {
	exe, env := helperExec("stopping-on-term")
	sv := supervisor(t, config.Service{Name: "u", Ready: config.ReadyNotify, Exec: exe, Env: env})
	if r := sv.StartAll(); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	for i := 0; i < 3; i++ {
		if _, err := sv.Upgrade("u", ""); err != nil {
			t.Fatal(err)
		}
	}
	// Each old version's STOPPING=1 may be read after the upgrade's answer.
	s := sv.Service("u")
	s.WaitUntil(func(st Status) bool { return st.NotifyLate+st.NotifyDropped >= 3 }, 5*time.Second)
	st := s.Status()
	if st.NotifyDropped != 0 || st.NotifyLate < 3 || st.Upgrades != 3 {
		t.Fatalf("after 3 upgrades: dropped %d (want 0), late %d (want ≥ 3): %+v", st.NotifyDropped, st.NotifyLate, st)
	}
}

// blockingWriter is a console that never takes a byte: a serial line stuck by flow control.
type blockingWriter struct{ stuck chan struct{} }

func (w blockingWriter) Write(p []byte) (int, error) { <-w.stuck; return len(p), nil }

// Defect 8: one console mutex let a stuck console stall every service's output (their pipes
// fill, their writes block). Now the ring gets every line and other services start.
func TestStuckConsoleStallsNoService(t *testing.T) {
	w := blockingWriter{stuck: make(chan struct{})}
	defer close(w.stuck)
	cfg := &config.Config{Service: []config.Service{
		{Name: "chatty", Exec: sh("i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done; echo done; exec sleep 100")},
		{Name: "quiet", Exec: sh("echo hello; exec sleep 100")},
	}}
	for i := range cfg.Service {
		cfg.Service[i].Restart = config.RestartNever
		cfg.Service[i].ApplyDefaults()
	}
	sv, err := New(cfg, Options{Log: testLog(), Reaper: reaper, RunDir: t.TempDir(), Console: w})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sv.StopAll(); sv.Close() })
	for _, r := range sv.StartAll() {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	waitLog(t, sv.Service("chatty"), "done")
	waitLog(t, sv.Service("quiet"), "hello")
	if n := len(sv.Service("chatty").Logs.Tail(0)); n != DefaultLogLines {
		t.Errorf("ring holds %d lines, want %d", n, DefaultLogLines)
	}
}

// Defect 5: closing a supervisor releases every fd and goroutine its services held (log pipes
// were never closed: 2 goroutines and 4 fds per service).
func TestCloseReleasesFdsAndGoroutines(t *testing.T) {
	// Fds are compared by number and target, not counted: a count taken while an earlier
	// test's leftovers were still closing was higher than the one after, and on a loaded
	// machine that failed a test that found no leak.
	fds0, g0 := fdSet(t), runtime.NumGoroutine()
	for i := 0; i < 3; i++ {
		exe, env := helperExec("notify-ready")
		cfg := &config.Config{Service: []config.Service{
			{Name: "a", Exec: sh("echo a; exec sleep 100"), Restart: config.RestartNever},
			{Name: "b", Exec: exe, Env: env, Ready: config.ReadyNotify, Restart: config.RestartNever, FDStoreMax: 4,
				Socket: []config.Socket{{Name: "s", Listen: "tcp://127.0.0.1:0"}}},
		}}
		for i := range cfg.Service {
			cfg.Service[i].ApplyDefaults()
		}
		sv, err := New(cfg, Options{Log: testLog(), Reaper: reaper, RunDir: t.TempDir(), Console: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range sv.StartAll() {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
		sv.StopAll()
		if err := sv.Close(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for (len(newFds(t, fds0)) > 0 || runtime.NumGoroutine() > g0) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if extra := newFds(t, fds0); len(extra) > 0 {
		t.Errorf("fds open after three supervisors came and went that were not before: %v", extra)
	}
	if n := runtime.NumGoroutine(); n > g0 {
		t.Errorf("goroutines: %d after, %d before", n, g0)
	}
}

// fdSet is this process's open fds as "number→target", less those closed before their target
// was read (the directory ReadDir listed them with, and any other goroutine's short-lived fd).
func fdSet(t *testing.T) map[string]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			set[e.Name()+"→"+target] = true
		}
	}
	return set
}

// newFds lists the open fds that were not in before.
func newFds(t *testing.T, before map[string]bool) []string {
	t.Helper()
	var out []string
	for fd := range fdSet(t) {
		if !before[fd] {
			out = append(out, fd)
		}
	}
	sort.Strings(out)
	return out
}

// NOTIFY_SOCKET goes, as systemd sets it, only to a service that may use it.
func TestNotifySocketOnlyWhereUsed(t *testing.T) {
	exe, env := helperExec("env")
	sv := supervisor(t,
		config.Service{Name: "plain", Exec: exe, Env: env},
		config.Service{Name: "notify", Exec: exe, Env: env, Ready: config.ReadyNotify},
		config.Service{Name: "store", Exec: exe, Env: env, FDStoreMax: 1},
		config.Service{Name: "dog", Exec: exe, Env: env, Watchdog: dur(time.Hour)})
	for _, r := range sv.StartAll() {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	for name, want := range map[string]bool{"plain": false, "notify": true, "store": true, "dog": true} {
		s := sv.Service(name)
		waitLog(t, s, "env: end")
		got := false
		for _, l := range s.Logs.Tail(0) {
			got = got || strings.HasPrefix(l.Text, "env: NOTIFY_SOCKET=")
		}
		if got != want {
			t.Errorf("%s: NOTIFY_SOCKET set %v, want %v", name, got, want)
		}
	}
}

// Status answers while the loop has a start waiting for READY=1, a stop waiting for its
// timeout and an upgrade in its overlap: those are states, not calls that hold anything.
func TestStatusAnswersDuringTransitions(t *testing.T) {
	exe, env := helperExec("notify-never")
	sv := supervisor(t, config.Service{Name: "slow", Ready: config.ReadyNotify, Exec: exe, Env: env,
		StartTimeout: dur(30 * time.Second)})
	s := sv.Service("slow")
	started := make(chan error, 1)
	go func() { started <- sv.Start("slow") }()
	if !s.WaitUntil(func(st Status) bool { return st.State == Starting && st.Pid != 0 }, 5*time.Second) {
		t.Fatalf("not starting: %+v", s.Status())
	}
	stopped := make(chan error, 1)
	go func() { _, err := sv.Stop("slow"); stopped <- err }()
	if err := wait(t, started, "the start to be answered"); !errors.Is(err, errStopping) {
		t.Errorf("start interrupted by a stop: %v", err)
	}
	if err := wait(t, stopped, "the stop"); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st.State != Stopped {
		t.Fatalf("after stop: %+v", st)
	}
}
