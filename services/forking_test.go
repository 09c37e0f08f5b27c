package services

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
)

// forkingScript is a daemon as a shell script: it starts `sleep` in a session of its own (as a
// daemon's child calls setsid), writes its pid to pidFile only after a delay (nginx writes it
// after its parent exited) and exits with status exit.
func forkingScript(pidFile, delay string, exit int) []string {
	return sh(`setsid sleep 1000 </dev/null >/dev/null 2>&1 & p=$!; ( sleep ` + delay + `; echo $p > ` + pidFile +
		` ) & exit ` + strconv.Itoa(exit))
}

func TestForkingFollowsThePidFile(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "d.pid")
	sv := supervisor(t, config.Service{Name: "d", Type: config.TypeForking, PIDFile: pidFile,
		Exec: forkingScript(pidFile, "0.2", 0)})
	if rep := sv.StartAll(); rep[0].Err != nil {
		t.Fatalf("start: %v", rep[0].Err)
	}
	st := sv.Status("d")
	b, _ := os.ReadFile(pidFile)
	daemon, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if st.State != Running || st.Pid != daemon || daemon == 0 {
		t.Fatalf("status %s pid %d; want running with the pid file's %d", st.State, st.Pid, daemon)
	}
	if !alive(daemon) {
		t.Fatalf("daemon %d not running", daemon)
	}
	// A second start must not start a duplicate (lighttpd's failure mode without tracking).
	if err := sv.Start("d"); err != nil || sv.Status("d").Pid != daemon {
		t.Fatalf("start again: %v, pid %d", err, sv.Status("d").Pid)
	}
	if _, err := sv.Stop("d"); err != nil {
		t.Fatal(err)
	}
	waitGone(t, daemon) // it left the process group: only following its pid reaches it
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left behind after the stop: %v", err)
	}
}

func TestForkingDaemonExitIsTheServiceExit(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "d.pid")
	sv := supervisor(t, config.Service{Name: "d", Type: config.TypeForking, PIDFile: pidFile,
		Exec: forkingScript(pidFile, "0", 0)})
	sv.StartAll()
	pid := sv.Status("d").Pid
	if err := killPid(pid); err != nil {
		t.Fatal(err)
	}
	s := sv.Service("d")
	if !s.WaitUntil(func(st Status) bool { return st.State == Failed }, 5*time.Second) {
		t.Fatalf("daemon killed; status %+v, want failed", s.Status())
	}
	if st := s.Status(); !strings.Contains(st.LastExit, "SIGKILL") {
		t.Errorf("last exit %q, want the daemon's (killed by SIGKILL)", st.LastExit)
	}
}

func TestForkingFailures(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		exec       func(pidFile string) []string
	}{
		{"starter fails", "exited with status 3", func(p string) []string {
			return sh(`setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > ` + p + `; exit 3`)
		}},
		{"no pid file", "no running daemon in pid_file", func(string) []string { return sh("exit 0") }},
		{"pid of a stranger", "not a child of baton", func(p string) []string { return sh("echo " + strconv.Itoa(os.Getppid()) + " > " + p) }},
		{"starter never exits", "still running after start_timeout", func(string) []string { return sh("sleep 1000") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "d.pid")
			sv := supervisor(t, config.Service{Name: "d", Type: config.TypeForking, PIDFile: pidFile,
				StartTimeout: dur(300 * time.Millisecond), Exec: tc.exec(pidFile)})
			rep := sv.StartAll()
			if rep[0].Err == nil || !strings.Contains(rep[0].Err.Error(), tc.want) {
				t.Fatalf("start: %v; want an error with %q", rep[0].Err, tc.want)
			}
			if b, err := os.ReadFile(pidFile); err == nil && tc.name == "starter fails" {
				pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				waitGone(t, pid) // the daemon of a failed start is not left behind
			}
			if !sv.Service("d").WaitUntil(func(st Status) bool { return st.State == Failed }, 5*time.Second) {
				t.Errorf("state %s, want failed", sv.Status("d").State)
			}
		})
	}
}

func TestOneshotRunsBeforeWhatIsOrderedAfterIt(t *testing.T) {
	dir := t.TempDir()
	done := filepath.Join(dir, "done")
	sv := supervisor(t,
		config.Service{Name: "setup", Type: config.TypeOneshot, Exec: sh("sleep 0.2; touch " + done)},
		config.Service{Name: "web", Requires: []string{"setup"}, Exec: sh("test -f " + done + " && exec sleep 1000")},
		config.Service{Name: "flag", Type: config.TypeOneshot, RemainAfterExit: true, Exec: sh("exit 0")},
	)
	for _, r := range sv.StartAll() {
		if r.Err != nil {
			t.Fatalf("start %s: %v", r.Name, r.Err)
		}
	}
	if st := sv.Status("setup"); st.State != Stopped || !st.Completed || st.LastExit != "exited with status 0" {
		t.Errorf("setup: %+v; want stopped, completed", st)
	}
	if st := sv.Status("web"); st.State != Running {
		t.Errorf("web: %s (%s); want running: setup had not finished before it started", st.State, st.Error)
	}
	if st := sv.Status("flag"); st.State != Running || st.Pid != 0 {
		t.Errorf("remain_after_exit: %s pid %d; want running with no process", st.State, st.Pid)
	}
	if _, err := sv.Stop("flag"); err != nil || sv.Status("flag").State != Stopped {
		t.Errorf("stop remain_after_exit: %v, %s", err, sv.Status("flag").State)
	}
}

func TestOneshotFailure(t *testing.T) {
	sv := supervisor(t, config.Service{Name: "setup", Type: config.TypeOneshot, Exec: sh("exit 2")})
	rep := sv.StartAll()
	if rep[0].Err == nil || !strings.Contains(rep[0].Err.Error(), "exited with status 2") {
		t.Fatalf("start: %v", rep[0].Err)
	}
	if st := sv.Status("setup"); st.State != Failed || st.Completed {
		t.Errorf("%+v; want failed", st)
	}
}

func killPid(pid int) error { return unix.Kill(pid, unix.SIGKILL) }
