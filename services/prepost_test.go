package services

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
)

// trace is a file the commands of a test append their names to; read gives them in order.
type trace string

func newTrace(t *testing.T) trace { return trace(filepath.Join(t.TempDir(), "trace")) }

// cmd appends word to the trace, then runs rest (a shell snippet).
func (tr trace) cmd(word, rest string) []string {
	return sh("echo " + word + " >> " + string(tr) + "; " + rest)
}

func (tr trace) read() string {
	b, _ := os.ReadFile(string(tr))
	return strings.Join(strings.Fields(string(b)), " ")
}

func TestExecStartPreAndStopPost(t *testing.T) {
	tr := newTrace(t)
	sv := supervisor(t, config.Service{Name: "x",
		ExecStartPre: [][]string{tr.cmd("pre1", "true"), tr.cmd("pre2", "true"), {"-/bin/false"}},
		Exec:         tr.cmd("main", "exec sleep 100"),
		ExecStopPost: [][]string{tr.cmd("post1", "exit 3"), tr.cmd("post2", "true")},
		StartTimeout: config.Duration{Duration: 10 * time.Second}})
	if rep := sv.StartAll(); rep[0].Err != nil {
		t.Fatal(rep[0].Err)
	}
	s := sv.Service("x")
	waitTrace(t, tr, "pre1 pre2 main")
	if st := s.Status(); st.State != Running {
		t.Fatalf("state %s after start; want running", st.State)
	}
	if _, err := sv.Stop("x"); err != nil {
		t.Fatal(err)
	}
	// Both post commands ran before the stop answered; the first one's failure (no "-")
	// leaves the service failed, with the reason.
	if got := tr.read(); got != "pre1 pre2 main post1 post2" {
		t.Errorf("ran %q; want pre1 pre2 main post1 post2", got)
	}
	st := s.Status()
	if st.State != Failed || !strings.Contains(st.Error, `exec_stop_post "/bin/sh -c echo post1`) || !strings.Contains(st.Error, "exited with status 3") {
		t.Errorf("after stop: %s, %q; want failed naming exec_stop_post's first command and its status", st.State, st.Error)
	}
}

func TestExecStartPreFailureFailsTheStart(t *testing.T) {
	tr := newTrace(t)
	sv := supervisor(t, config.Service{Name: "x",
		ExecStartPre: [][]string{tr.cmd("pre1", "exit 7"), tr.cmd("pre2", "true")},
		Exec:         tr.cmd("main", "exec sleep 100"),
		ExecStopPost: [][]string{tr.cmd("post", "true")}})
	rep := sv.StartAll()
	if rep[0].Err == nil || !strings.Contains(rep[0].Err.Error(), `exec_start_pre "/bin/sh -c echo pre1`) ||
		!strings.Contains(rep[0].Err.Error(), "exited with status 7") {
		t.Fatalf("start: %v; want the failing exec_start_pre and its status", rep[0].Err)
	}
	s := sv.Service("x")
	if !s.WaitUntil(func(st Status) bool { return st.State == Failed }, 5*time.Second) {
		t.Fatalf("state %s; want failed", s.Status().State)
	}
	// The service itself never ran; exec_stop_post did, as after any start attempt.
	if got := tr.read(); got != "pre1 post" {
		t.Errorf("ran %q; want pre1 post", got)
	}
}

func TestExecStartPreTimeout(t *testing.T) {
	sv := supervisor(t, config.Service{Name: "x", ExecStartPre: [][]string{sh("exec sleep 100")},
		Exec: sh("exec sleep 100"), StartTimeout: config.Duration{Duration: 300 * time.Millisecond}})
	rep := sv.StartAll()
	if rep[0].Err == nil || !strings.Contains(rep[0].Err.Error(), "still running after start_timeout 300ms; killed") {
		t.Fatalf("start: %v; want the start_timeout named", rep[0].Err)
	}
}

// exec_stop_post runs between the end of a run and the restart policy's decision.
func TestExecStopPostAfterExit(t *testing.T) {
	tr := newTrace(t)
	sv := supervisor(t, config.Service{Name: "x", Restart: config.RestartOnFailure, RestartLimit: 1,
		RestartDelay: config.Duration{Duration: 10 * time.Millisecond},
		Exec:         tr.cmd("main", "exit 1"), ExecStopPost: [][]string{tr.cmd("post", "true")}})
	sv.StartAll()
	s := sv.Service("x")
	if !s.WaitUntil(func(st Status) bool { return st.State == Failed }, 10*time.Second) {
		t.Fatalf("state %s; want failed after the restart limit", s.Status().State)
	}
	if got := tr.read(); got != "main post main post" {
		t.Errorf("ran %q; want main post main post (post after each run, before the restart)", got)
	}
}

// A stop while exec_start_pre runs ends it (the service never starts), then exec_stop_post runs.
func TestStopDuringExecStartPre(t *testing.T) {
	tr := newTrace(t)
	sv := supervisor(t, config.Service{Name: "x", ExecStartPre: [][]string{tr.cmd("pre", "exec sleep 100")},
		Exec: tr.cmd("main", "exec sleep 100"), ExecStopPost: [][]string{tr.cmd("post", "true")}})
	started := make(chan StartReport, 1)
	go func() { started <- sv.StartAll()[0] }()
	s := sv.Service("x")
	waitTrace(t, tr, "pre")
	if !s.WaitUntil(func(st Status) bool { return strings.HasPrefix(st.Status, "exec_start_pre 1/1 (pid ") }, 5*time.Second) {
		t.Fatalf("status %q; want exec_start_pre 1/1 running", s.Status().Status)
	}
	var pid int
	if _, err := fmt.Sscanf(s.Status().Status, "exec_start_pre 1/1 (pid %d)", &pid); err != nil {
		t.Fatal(err)
	}
	if _, err := sv.Stop("x"); err != nil {
		t.Fatal(err)
	}
	if rep := <-started; rep.Err == nil {
		t.Error("start succeeded; want it ended by the stop")
	}
	if err := unix.Kill(pid, 0); err == nil {
		t.Errorf("exec_start_pre's process %d still runs after the stop", pid)
	}
	if st := s.Status(); st.State != Stopped {
		t.Errorf("state %s; want stopped", st.State)
	}
	if got := tr.read(); got != "pre post" {
		t.Errorf("ran %q; want pre post", got)
	}
}

func TestOneshotStopPost(t *testing.T) {
	tr := newTrace(t)
	sv := supervisor(t, config.Service{Name: "x", Type: config.TypeOneshot,
		ExecStartPre: [][]string{tr.cmd("pre", "true")}, Exec: tr.cmd("task", "true"),
		ExecStopPost: [][]string{tr.cmd("post", "true")}})
	if rep := sv.StartAll(); rep[0].Err != nil {
		t.Fatal(rep[0].Err)
	}
	s := sv.Service("x")
	if !s.WaitUntil(func(st Status) bool { return st.State == Stopped }, 5*time.Second) {
		t.Fatalf("state %s; want stopped once the task and its post are done", s.Status().State)
	}
	if got := tr.read(); got != "pre task post" || !s.Status().Completed {
		t.Errorf("ran %q, completed %v; want pre task post, completed", got, s.Status().Completed)
	}
}

func waitTrace(t *testing.T, tr trace, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for tr.read() != want {
		if time.Now().After(deadline) {
			t.Fatalf("trace %q; want %q", tr.read(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
