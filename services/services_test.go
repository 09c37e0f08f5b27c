package services

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/handoff/execshim"
	"github.com/baton-init/baton/system"
)

// The tests run the supervisor on the host as baton does outside PID 1: the test process is a
// child subreaper and one Reaper waits for everything.
var reaper *system.Reaper

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "baton-exec" { // the test binary doubles as the exec shim
		os.Exit(execshim.Main(os.Args[1:]))
	}
	if mode := os.Getenv("BATON_TEST_HELPER"); mode != "" {
		helper(mode)
		return
	}
	// As baton does: the services started here must not inherit what the test binary was
	// started with ignored (SIGHUP under nohup, SIGINT in a script's background job).
	system.ResetIgnoredSignals()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		panic(err)
	}
	reaper = system.NewReaper(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func dur(d time.Duration) config.Duration { return config.Duration{Duration: d} }

func supervisor(t *testing.T, svcs ...config.Service) *Supervisor {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return supervisorLog(t, log, svcs...)
}

// supervisorLog is supervisor with baton's log going to log.
func supervisorLog(t *testing.T, log *slog.Logger, svcs ...config.Service) *Supervisor {
	t.Helper()
	cfg := &config.Config{Service: svcs}
	for i := range cfg.Service {
		s := &cfg.Service[i]
		if s.Restart == "" {
			s.Restart = config.RestartNever
		}
		if s.StopTimeout.Duration == 0 {
			s.StopTimeout.Duration = 2 * time.Second
		}
	}
	for i := range cfg.Service {
		cfg.Service[i].ApplyDefaults()
	}
	sv, err := New(cfg, Options{Log: log, Reaper: reaper, RunDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sv.StopAll(); sv.Close() })
	return sv
}

func TestStartOrderFollowsAfter(t *testing.T) {
	sv := supervisor(t,
		config.Service{Name: "web", Exec: sh("sleep 100"), After: []string{"db", "cache"}},
		config.Service{Name: "cache", Exec: sh("sleep 100"), After: []string{"db"}},
		config.Service{Name: "db", Exec: sh("sleep 100")},
	)
	var got []string
	for _, r := range sv.StartAll() {
		if r.Err != nil {
			t.Errorf("%s: %v", r.Name, r.Err)
		}
		got = append(got, r.Name)
	}
	if strings.Join(got, ",") != "db,cache,web" {
		t.Errorf("start order = %v, want db,cache,web", got)
	}
	for _, st := range sv.Statuses() {
		if st.State != Running || st.Pid == 0 {
			t.Errorf("%s: %+v, want running with a pid", st.Name, st)
		}
	}
	// Stop goes in reverse; every service must end stopped.
	if killed := sv.StopAll(); len(killed) != 0 {
		t.Errorf("killed %v; sleep should end on SIGTERM", killed)
	}
	for _, st := range sv.Statuses() {
		if st.State != Stopped {
			t.Errorf("%s after StopAll: %s", st.Name, st.State)
		}
	}
}

// logRecorder keeps what the supervisor logs, for tests that check what it decided rather
// than how long it took.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec.Clone())
	r.mu.Unlock()
	return nil
}

// values returns attribute key of every record with message msg.
func (r *logRecorder) values(msg, key string) []slog.Value {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []slog.Value
	for _, rec := range r.recs {
		if rec.Message != msg {
			continue
		}
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				out = append(out, a.Value)
			}
			return true
		})
	}
	return out
}

// The delays the supervisor chose are checked exactly (from its log: doubling, then the cap),
// and the starts it made against them (never before the delay is up). A gap's upper bound is
// not checked: on a loaded machine fork/exec of sh can take any time, and the cap is what an
// upper bound was there to show.
func TestRestartBackoffGrowsAndIsCapped(t *testing.T) {
	stamps := filepath.Join(t.TempDir(), "starts")
	log := &logRecorder{}
	sv := supervisorLog(t, slog.New(log), config.Service{Name: "crash", Restart: config.RestartOnFailure, RestartLimit: 100,
		RestartDelay: dur(100 * time.Millisecond), RestartDelayMax: dur(400 * time.Millisecond),
		Exec: sh("date +%s%N >> " + stamps + "; exit 3")})
	sv.StartAll()
	s := sv.Service("crash")
	if !s.WaitUntil(func(st Status) bool { return st.Restarts >= 6 }, 10*time.Second) {
		t.Fatalf("only %d restarts in 10s", s.Status().Restarts)
	}
	if st := s.Status(); !strings.Contains(st.LastExit, "status 3") {
		t.Errorf("last exit = %q, want status 3", st.LastExit)
	}
	sv.StopAll()
	data, _ := os.ReadFile(stamps)
	var starts []int64
	for _, l := range strings.Fields(string(data)) {
		n, _ := strconv.ParseInt(l, 10, 64)
		starts = append(starts, n)
	}
	if len(starts) < 6 {
		t.Fatalf("%d starts recorded, want ≥ 6", len(starts))
	}
	var chosen []time.Duration
	for _, v := range log.values("restarting", "in") {
		chosen = append(chosen, v.Duration())
	}
	want := []time.Duration{100, 200, 400, 400, 400} // ms: doubling, then the cap
	if len(chosen) < len(want) {
		t.Fatalf("%d restart delays logged (%v), want ≥ %d", len(chosen), chosen, len(want))
	}
	for i, w := range want {
		gap := time.Duration(starts[i+1] - starts[i])
		t.Logf("gap %d: %v (backoff %v)", i, gap.Round(time.Millisecond), chosen[i])
		if chosen[i] != w*time.Millisecond {
			t.Errorf("restart %d: backoff %v, want %vms (delays chosen: %v)", i+1, chosen[i], int(w), chosen)
		}
		if gap < chosen[i] {
			t.Errorf("gap %d = %v, shorter than the backoff %v", i, gap, chosen[i])
		}
	}
	for i, d := range chosen {
		if d > 400*time.Millisecond {
			t.Errorf("restart %d: backoff %v, above restart_delay_max 400ms", i+1, d)
		}
	}
}

func TestRestartPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy      string
		script      string
		wantRestart bool
		wantState   State // where it ends when not restarted
	}{
		{config.RestartOnFailure, "exit 0", false, Stopped},
		{config.RestartOnFailure, "kill -9 $$", true, ""},
		{config.RestartNever, "exit 1", false, Failed},
		{config.RestartAlways, "exit 0", true, ""},
	} {
		t.Run(tc.policy+"/"+tc.script, func(t *testing.T) {
			sv := supervisor(t, config.Service{Name: "s", Restart: tc.policy, Exec: sh(tc.script)})
			sv.StartAll()
			s := sv.Service("s")
			if tc.wantRestart {
				if !s.WaitUntil(func(st Status) bool { return st.Restarts >= 1 }, 5*time.Second) {
					t.Errorf("not restarted: %+v", s.Status())
				}
				return
			}
			// Stopped and failed are final: the run loop has ended and will not restart it.
			if !s.WaitUntil(func(st Status) bool { return st.State == tc.wantState && st.LastExit != "" }, 5*time.Second) {
				t.Fatalf("status %+v, want %s", s.Status(), tc.wantState)
			}
			if st := s.Status(); st.Restarts != 0 {
				t.Errorf("status %+v, want ended once without restart", st)
			}
		})
	}
}

func TestStartFailureIsReported(t *testing.T) {
	sv := supervisor(t, config.Service{Name: "ghost", Exec: []string{"/nonexistent/bin"}})
	r := sv.StartAll()
	if r[0].Err == nil || !strings.Contains(r[0].Err.Error(), "/nonexistent/bin") {
		t.Errorf("start error = %v, want it to name the binary", r[0].Err)
	}
	if st := sv.Service("ghost").Status(); st.State != Failed {
		t.Errorf("state = %s, want failed", st.State)
	}
}

func TestStopKillsTheWholeTree(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	sv := supervisor(t, config.Service{Name: "tree",
		Exec: sh("sleep 1000 & echo $! >> " + pids + "; sh -c 'sleep 1000 & echo $! >> " + pids + "; wait' & wait")})
	sv.StartAll()
	var grandchildren []int
	waitFile(t, pids, func(data string) bool {
		grandchildren = grandchildren[:0]
		for _, f := range strings.Fields(data) {
			n, _ := strconv.Atoi(f)
			grandchildren = append(grandchildren, n)
		}
		return len(grandchildren) == 2
	})
	if killed, _ := sv.Stop("tree"); len(killed) > 0 {
		t.Errorf("needed SIGKILL; SIGTERM to the group should do")
	}
	for _, pid := range grandchildren {
		waitGone(t, pid)
	}
}

func TestStopTimeoutEscalatesToSIGKILL(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	sv := supervisor(t, config.Service{Name: "stubborn", StopTimeout: dur(300 * time.Millisecond),
		Exec: sh(`trap "" TERM; touch ` + ready + `; while :; do sleep 0.05; done`)})
	sv.StartAll()
	s := sv.Service("stubborn")
	waitFile(t, ready) // SIGTERM before the trap is set would end it at once
	pid := s.Status().Pid
	start := time.Now()
	if killed, _ := sv.Stop("stubborn"); len(killed) != 1 {
		t.Errorf("Stop reported no SIGKILL for a process that ignores SIGTERM")
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("killed after %v, before the stop timeout", d)
	}
	waitGone(t, pid)
}

// waitGone waits until pid has ended and been reaped (it is no longer in /proc).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err == nil {
		// The pidfd becomes readable when the process exits: an event, not a guess.
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		_, _ = unix.Poll(fds, 5000)
		unix.Close(fd)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := system.ReadProcStat(pid)
		if err != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still there (state %c, parent %d)", pid, st.State, st.PPid)
		}
		time.Sleep(10 * time.Millisecond) // reaping follows SIGCHLD; poll briefly for it
	}
}

// waitFile waits until a file a test script writes exists and, if given, its contents satisfy
// ok. Polling: a shell script has no other way to tell us.
func waitFile(t *testing.T, path string, ok ...func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, err := os.ReadFile(path)
		if err == nil && (len(ok) == 0 || ok[0](string(data))) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not written as expected within 5s (%q, %v)", path, data, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRestartLimitMarksFailed(t *testing.T) {
	sv := supervisor(t, config.Service{Name: "flappy", Restart: config.RestartAlways, Exec: sh("exit 1"),
		RestartLimit: 3, RestartWindow: dur(10 * time.Second), RestartDelay: dur(10 * time.Millisecond), RestartDelayMax: dur(20 * time.Millisecond)})
	sv.StartAll()
	s := sv.Service("flappy")
	if !s.WaitUntil(func(st Status) bool { return st.State == Failed }, 10*time.Second) {
		t.Fatalf("not failed: %+v", s.Status())
	}
	st := s.Status()
	if st.Restarts != 3 || !strings.Contains(st.Error, "restarted more than 3 times in 10s") {
		t.Errorf("status %+v, want 3 restarts and the limit named", st)
	}
	// A manual start is a new chance.
	if err := sv.Start("flappy"); err != nil {
		t.Errorf("start after failure: %v", err)
	}
}

func TestPrivilegeDrop(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to change user")
	}
	sv := supervisor(t, config.Service{Name: "lowly", User: "nobody", Exec: sh("echo uid=$(id -u) gid=$(id -g) groups=$(id -G) home=$HOME; sleep 100")})
	sv.StartAll()
	s := sv.Service("lowly")
	line := waitLog(t, s, "uid=")
	if line != "uid=65534 gid=65534 groups=65534 home=/nonexistent" {
		t.Errorf("service runs as %q, want nobody with no supplementary groups", line)
	}
}

func TestUnknownUserFailsToStart(t *testing.T) {
	sv := supervisor(t, config.Service{Name: "who", User: "no-such-user", Exec: sh("true")})
	r := sv.StartAll()
	if r[0].Err == nil || !strings.Contains(r[0].Err.Error(), `user "no-such-user"`) {
		t.Errorf("start error = %v, want it to name the user", r[0].Err)
	}
}

func TestLogsCaptureAndFollow(t *testing.T) {
	sv := supervisor(t, config.Service{Name: "chatty", Exec: sh("echo one; echo two >&2; sleep 100")})
	sv.StartAll()
	s := sv.Service("chatty")
	waitLog(t, s, "two")
	waitLog(t, s, "one")
	// stdout and stderr are separate pipes: their relative order is not kept.
	lines := s.Logs.Tail(0)
	streams := map[string]string{}
	for _, l := range lines {
		streams[l.Text] = l.Stream
	}
	if len(lines) != 2 || streams["one"] != "stdout" || streams["two"] != "stderr" {
		t.Fatalf("captured %+v", lines)
	}
	// Follow: wait for each line newer than the last seen.
	sv2 := supervisor(t, config.Service{Name: "ticker", Exec: sh("for i in 1 2 3; do echo tick $i; sleep 0.05; done; sleep 100")})
	sv2.StartAll()
	tick := sv2.Service("ticker")
	var got []string
	var last uint64
	deadline := time.After(5 * time.Second)
	for len(got) < 3 {
		news, ch := tick.Logs.Since(last)
		for _, l := range news {
			got = append(got, l.Text)
			last = l.Seq
		}
		if len(got) >= 3 {
			break
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("followed %v, want 3 ticks", got)
		}
	}
	if strings.Join(got, ",") != "tick 1,tick 2,tick 3" {
		t.Errorf("followed %v", got)
	}
}

func TestLogRingIsBounded(t *testing.T) {
	r := newLogRing(3)
	for i := 0; i < 5; i++ {
		r.add("stdout", strconv.Itoa(i))
	}
	var texts []string
	for _, l := range r.Tail(0) {
		texts = append(texts, l.Text)
	}
	if strings.Join(texts, ",") != "2,3,4" {
		t.Errorf("ring kept %v, want the last 3", texts)
	}
	if l := r.Tail(2); len(l) != 2 || l[0].Text != "3" {
		t.Errorf("Tail(2) = %+v", l)
	}
}

func TestNotifyReadiness(t *testing.T) {
	exe, env := helperExec("notify-ready")
	sv := supervisor(t, config.Service{Name: "slow", Ready: config.ReadyNotify, Exec: exe, Env: env})
	start := time.Now()
	r := sv.StartAll()
	if r[0].Err != nil {
		t.Fatalf("start: %v", r[0].Err)
	}
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Errorf("start returned after %v, before the service sent READY=1 (150ms)", took)
	}
	st := sv.Service("slow").Status()
	if st.State != Running || st.Status != "warming up done" {
		t.Errorf("status %+v, want running with its STATUS=", st)
	}
}

func TestNotifyStartTimeout(t *testing.T) {
	exe, env := helperExec("notify-never")
	sv := supervisor(t, config.Service{Name: "mute", Ready: config.ReadyNotify, Exec: exe, Env: env,
		StartTimeout: dur(300 * time.Millisecond)})
	r := sv.StartAll()
	if r[0].Err == nil || !strings.Contains(r[0].Err.Error(), "no READY=1 within start_timeout 300ms") {
		t.Fatalf("start error = %v", r[0].Err)
	}
	s := sv.Service("mute")
	if !s.WaitUntil(func(st Status) bool { return st.State == Failed && st.Pid == 0 }, 5*time.Second) {
		t.Errorf("status %+v, want failed and killed", s.Status())
	}
}

func TestForgedNotifyIsIgnored(t *testing.T) {
	readyFile := filepath.Join(t.TempDir(), "go")
	exe, env := helperExec("notify-after-file")
	sv := supervisor(t, config.Service{Name: "victim", Ready: config.ReadyNotify, Exec: exe, Env: append(env, "READY_FILE="+readyFile)})
	s := sv.Service("victim")
	done := make(chan error, 1)
	go func() { done <- sv.Start("victim") }()
	if !s.WaitUntil(func(st Status) bool { return st.Pid != 0 }, 5*time.Second) {
		t.Fatal("not started")
	}
	// This test process is not in the service's tree: its READY=1 must be dropped.
	if err := sendNotify(s.notify.Path, "READY=1\nSTATUS=forged"); err != nil {
		t.Fatal(err)
	}
	if !s.WaitUntil(func(st Status) bool { return st.NotifyDropped == 1 }, 5*time.Second) {
		t.Fatalf("forged message not counted as dropped: %+v", s.Status())
	}
	if st := s.Status(); st.State != Starting || st.Status == "forged" {
		t.Fatalf("forged READY=1 was obeyed: %+v", st)
	}
	os.WriteFile(readyFile, nil, 0o644)
	if err := <-done; err != nil {
		t.Fatalf("start: %v", err)
	}
	if st := s.Status(); st.State != Running {
		t.Errorf("after the real READY=1: %+v", st)
	}
}

func sendNotify(path, msg string) error {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(msg))
	return err
}

func TestRequires(t *testing.T) {
	sv := supervisor(t,
		config.Service{Name: "db", Exec: []string{"/nonexistent/db"}},
		config.Service{Name: "app", Exec: sh("sleep 100"), Requires: []string{"db"}},
		config.Service{Name: "side", Exec: sh("sleep 100"), After: []string{"db"}},
	)
	reports := sv.StartAll()
	errs := map[string]error{}
	for _, r := range reports {
		errs[r.Name] = r.Err
	}
	if errs["app"] == nil || !strings.Contains(errs["app"].Error(), "requires db, which is failed") {
		t.Errorf("app: %v, want it refused because db failed", errs["app"])
	}
	if errs["side"] != nil {
		t.Errorf("side (only ordered after db) did not start: %v", errs["side"])
	}
	if st := sv.Service("app").Status(); st.State != Failed || st.Pid != 0 {
		t.Errorf("app: %+v", st)
	}
}

func TestStopStopsDependentsFirst(t *testing.T) {
	sv := supervisor(t,
		config.Service{Name: "db", Exec: sh("sleep 100")},
		config.Service{Name: "app", Exec: sh("sleep 100"), Requires: []string{"db"}},
	)
	sv.StartAll()
	res, err := sv.StopReport("db")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Also, ",") != "app" { // said, not only done (issue 11)
		t.Errorf("stopping db also stopped %q, want app", res.Also)
	}
	for _, n := range []string{"app", "db"} {
		if st := sv.Service(n).Status(); st.State != Stopped {
			t.Errorf("%s: %s, want stopped", n, st.State)
		}
	}
	if err := sv.Start("app"); err != nil { // starts db first
		t.Fatal(err)
	}
	if st := sv.Service("db").Status(); st.State != Running {
		t.Errorf("db not started for app: %+v", st)
	}
	if _, err := sv.Stop("nope"); !errors.Is(err, ErrUnknown) {
		t.Errorf("Stop(nope) = %v, want ErrUnknown", err)
	}
}

// waitLog waits for a log line containing substr and returns it.
func waitLog(t *testing.T, s *Service, substr string) string {
	t.Helper()
	var last uint64
	deadline := time.After(5 * time.Second)
	for {
		lines, changed := s.Logs.Since(last)
		for _, l := range lines {
			if strings.Contains(l.Text, substr) {
				return l.Text
			}
			last = l.Seq
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no log line with %q; logs: %+v; status %+v", substr, s.Logs.Tail(0), s.Status())
		}
	}
}
