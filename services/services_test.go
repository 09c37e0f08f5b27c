package services

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/system"
)

// The tests run the supervisor on the host as baton does outside PID 1: the test process is a
// child subreaper and one Reaper waits for everything.
var reaper *system.Reaper

func TestMain(m *testing.M) {
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
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
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

func TestRestartBackoffGrowsAndIsCapped(t *testing.T) {
	stamps := filepath.Join(t.TempDir(), "starts")
	sv := supervisor(t, config.Service{Name: "crash", Restart: config.RestartOnFailure, RestartLimit: 100,
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
	want := []time.Duration{100, 200, 400, 400, 400} // ms: doubling, then the cap
	for i, w := range want {
		gap := time.Duration(starts[i+1] - starts[i])
		t.Logf("gap %d: %v (backoff %vms)", i, gap.Round(time.Millisecond), int(w))
		if gap < w*time.Millisecond {
			t.Errorf("gap %d = %v, shorter than the backoff %vms", i, gap, int(w))
		}
		// Upper bound: below the next doubling, which leaves slack for fork/exec of sh on a
		// loaded machine; without the cap gaps 3 and 4 would be 800ms and 1.6s.
		if gap >= 2*w*time.Millisecond {
			t.Errorf("gap %d = %v, far above the backoff %vms (cap not applied?)", i, gap, int(w))
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
