package services

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
)

// Hostile or broken input to a service's side of baton (issue 11): each test fails on the
// code before the fix.

func notifySender(msgs ...string) ([]string, []string) {
	exe, env := helperExec("notify-send")
	return exe, append(env, "NOTIFY_MSGS="+strings.Join(msgs, "|"))
}

// WATCHDOG_USEC=18446744073709552 wrapped to 384 ns and the service was killed at once; and
// the override outlived the run, so every later start was killed right after READY=1.
func TestWatchdogUsecOverflowRefusedAndOverrideLastsOneRun(t *testing.T) {
	exe, env := notifySender(`READY=1`, `WATCHDOG_USEC=18446744073709552`, `STATUS=after overflow`)
	sv := supervisor(t, config.Service{Name: "wd", Ready: config.ReadyNotify, Exec: exe, Env: env,
		Watchdog: dur(time.Hour)})
	if r := sv.StartAll(); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	s := sv.Service("wd")
	pid := s.Status().Pid
	if !s.WaitUntil(func(st Status) bool { return st.Status == "after overflow" }, 5*time.Second) {
		t.Fatalf("third datagram not seen: %+v", s.Status())
	}
	if st := s.Status(); st.Pid != pid || st.State != Running || st.Restarts != 0 {
		t.Fatalf("an overflowing WATCHDOG_USEC acted on: %+v", st)
	}

	// A valid override lasts one run: the next start gets the config's interval again.
	exe, env = notifySender(`READY=1`, `WATCHDOG_USEC=3600000001`, `STATUS=overridden`)
	sv = supervisor(t, config.Service{Name: "wd2", Ready: config.ReadyNotify, Exec: exe, Env: env,
		Watchdog: dur(time.Hour)})
	s = sv.Service("wd2")
	if err := sv.Start("wd2"); err != nil {
		t.Fatal(err)
	}
	s.WaitUntil(func(st Status) bool { return st.Status == "overridden" }, 5*time.Second)
	if got := s.snapInterval(); got != 3600000001*time.Microsecond {
		t.Fatalf("override not applied: %v", got)
	}
	if err := sv.Restart("wd2"); err != nil {
		t.Fatal(err)
	}
	// Both runs' first lines: the first run's "sent" may be all the log holds yet, so waiting
	// for a "sent" line raced the second run.
	var starts []string
	deadline := time.After(5 * time.Second)
	for len(starts) < 2 {
		starts = starts[:0]
		lines, changed := s.Logs.Since(0)
		for _, l := range lines {
			if strings.HasPrefix(l.Text, "started with WATCHDOG_USEC=") {
				starts = append(starts, l.Text)
			}
		}
		if len(starts) >= 2 {
			break
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("two runs did not start within 5s; logs %+v", s.Logs.Tail(0))
		}
	}
	for i, l := range starts {
		if l != "started with WATCHDOG_USEC=3600000000" {
			t.Errorf("run %d: %q, want the config's interval (3600000000); logs %+v", i+1, l, s.Logs.Tail(0))
		}
	}
}

// A 4,103-byte datagram was cut at 4,096 bytes and acted on: "WATCHDOG_USEC=30000000" at its
// end was read as "WATCHDOG_USEC=3", and the service was killed at once.
func TestOversizedNotifyIsDropped(t *testing.T) {
	long := "STATUS=" + strings.Repeat("a", 4096-len("STATUS=")-len(`\nWATCHDOG_USEC=3`)) + `\nWATCHDOG_USEC=30000000`
	exe, env := notifySender(`READY=1`, long, `STATUS=after`)
	sv := supervisor(t, config.Service{Name: "big", Ready: config.ReadyNotify, Exec: exe, Env: env, Watchdog: dur(time.Hour)})
	if r := sv.StartAll(); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	s := sv.Service("big")
	pid := s.Status().Pid
	if !s.WaitUntil(func(st Status) bool { return st.Status == "after" }, 5*time.Second) {
		t.Fatalf("last datagram not seen: %+v", s.Status())
	}
	if st := s.Status(); st.Pid != pid || st.Restarts != 0 || s.snapInterval() != time.Hour {
		t.Fatalf("the cut datagram was acted on: interval %v, %+v", s.snapInterval(), st)
	}
}

// snapInterval reads the loop's watchdog interval through the loop itself (a test-only probe).
func (s *Service) snapInterval() time.Duration {
	ch := make(chan time.Duration, 1)
	hook := func(x *Service, in input) {
		if x == s {
			if _, ok := in.(probe); ok {
				ch <- x.st.wdInterval
			}
		}
	}
	testHook.Store(&hook)
	defer testHook.Store(nil)
	s.post(probe{})
	return <-ch
}

// probe is a test-only input: the hook answers it from inside the loop.
type probe struct{}

func (probe) isInput() {}

// captureLog collects log records' messages for counting.
type captureLog struct {
	mu   sync.Mutex
	msgs []string
}

func (c *captureLog) Enabled(context.Context, slog.Level) bool { return true }
func (c *captureLog) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, r.Message)
	return nil
}
func (c *captureLog) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *captureLog) WithGroup(string) slog.Handler      { return c }
func (c *captureLog) count(substr string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.msgs {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

// 10,000 forged datagrams made 10,000 console lines: a stranger flooding the 0666 notify
// socket flooded the serial console too. Now one line per 10 s, with a count.
func TestForgedNotifyFloodIsRateLimited(t *testing.T) {
	exe, env := helperExec("notify-never")
	logs := &captureLog{}
	cfg := &config.Config{Service: []config.Service{{Name: "victim", Exec: exe, Env: env, Ready: config.ReadyNotify,
		Restart: config.RestartNever, StartTimeout: dur(time.Minute)}}}
	cfg.Service[0].ApplyDefaults()
	sv, err := New(cfg, Options{Log: slog.New(logs), Reaper: reaper, RunDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sv.StopAll(); sv.Close() })
	go sv.Start("victim")
	s := sv.Service("victim")
	s.WaitUntil(func(st Status) bool { return st.Pid != 0 }, 5*time.Second)
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: s.notify.Path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 1000
	for i := 0; i < n; i++ {
		if _, err := c.Write([]byte("READY=1")); err != nil {
			t.Fatal(err)
		}
	}
	if !s.WaitUntil(func(st Status) bool { return st.NotifyDropped == n }, 10*time.Second) {
		t.Fatalf("dropped %d of %d", s.Status().NotifyDropped, n)
	}
	if got := logs.count("outside the service"); got != 1 {
		t.Errorf("%d warning lines for %d forged datagrams, want 1 in the window", got, n)
	}
}

// ESC[2J in STATUS= cleared the screen of whoever ran initctl status.
func TestStatusAndConsoleShowControlCharactersEscaped(t *testing.T) {
	var out bytes.Buffer
	var mu sync.Mutex
	exe, env := notifySender("READY=1", "STATUS=\x1b[2Jcleared\x1b]0;title\x07")
	cfg := &config.Config{Service: []config.Service{
		{Name: "esc", Ready: config.ReadyNotify, Exec: exe, Env: env},
		{Name: "echo", Exec: sh(`printf 'a\033[2Jb\n'; exec sleep 100`)},
	}}
	for i := range cfg.Service {
		cfg.Service[i].Restart = config.RestartNever
		cfg.Service[i].ApplyDefaults()
	}
	sv, err := New(cfg, Options{Log: testLog(), Reaper: reaper, RunDir: t.TempDir(), Console: lockedWriter{&mu, &out}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sv.StopAll(); sv.Close() })
	sv.StartAll()
	s := sv.Service("esc")
	if !s.WaitUntil(func(st Status) bool { return strings.Contains(st.Status, "cleared") }, 5*time.Second) {
		t.Fatalf("status %+v", s.Status())
	}
	if got, want := s.Status().Status, `\x1b[2Jcleared\x1b]0;title\x07`; got != want {
		t.Errorf("STATUS shown as %q, want %q", got, want)
	}
	waitLog(t, sv.Service("echo"), "b")
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		got := out.String()
		mu.Unlock()
		if strings.Contains(got, `echo: a\x1b[2Jb`) {
			if strings.ContainsRune(got, 0x1b) {
				t.Fatalf("raw ESC on the console: %q", got)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("console: %q", out.String())
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// upgrade?exec=../../../bin/sh was accepted; and a ready = "started" service upgraded to a
// binary that exits at once counted as a success and killed the working version.
func TestUpgradeRefusesRelativeExecAndUnsettledVersion(t *testing.T) {
	sv := supervisor(t, config.Service{Name: "st", Exec: sh("exec sleep 100"), UpgradeSettle: dur(500 * time.Millisecond)})
	if r := sv.StartAll(); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	s := sv.Service("st")
	pid := s.Status().Pid
	if _, err := sv.Upgrade("st", "../../../bin/sh"); err == nil || !strings.Contains(err.Error(), "absolute path") {
		t.Errorf("relative exec: %v", err)
	}
	_, err := sv.Upgrade("st", "/bin/true")
	if err == nil || !strings.Contains(err.Error(), "within upgrade_settle 500ms") {
		t.Errorf("upgrade to a binary that exits at once: %v", err)
	}
	if st := s.Status(); st.Pid != pid || st.State != Running || !alive(pid) {
		t.Fatalf("the working version was replaced: %+v", st)
	}
	rep, err := sv.Upgrade("st", "")
	if err != nil || rep.ReadyAfter < 500*time.Millisecond {
		t.Fatalf("an upgrade that settles: %v, ready after %v", err, rep.ReadyAfter)
	}
}

// With no fd to spare, a start failed 6 times, hit restart_limit and stayed failed after the
// shortage ended. A start that fails for lack of fds is retried and not counted.
func TestStartWithoutFdsIsRetriedNotCounted(t *testing.T) {
	sv := supervisor(t, config.Service{Name: "fd", Exec: sh("exec sleep 100"), Restart: config.RestartOnFailure,
		RestartLimit: 1, RestartDelay: dur(10 * time.Millisecond), RestartDelayMax: dur(20 * time.Millisecond)})
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	restore := func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &old) }
	defer restore()
	// No new fd at all from here (the ones open stay usable) until restore.
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 3, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	err := sv.Start("fd")
	s := sv.Service("fd")
	ok := s.WaitUntil(func(st Status) bool { return st.Restarts >= 4 }, 10*time.Second)
	st := s.Status()
	restore()
	if err == nil || !strings.Contains(err.Error(), "too many open files") {
		t.Errorf("start without fds: %v", err)
	}
	if !ok || st.State == Failed {
		t.Fatalf("not retried past restart_limit 1 without failing: %+v", st)
	}
	if !s.WaitUntil(func(st Status) bool { return st.State == Running }, 10*time.Second) {
		t.Fatalf("not running once fds are back: %+v", s.Status())
	}
}
