package services

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
)

func TestReloadNotifyWaitsForReady(t *testing.T) {
	exe, env := helperExec("reload")
	sv := supervisor(t,
		config.Service{Name: "ok", Ready: config.ReadyNotify, Exec: exe, Env: env},
		config.Service{Name: "stuck", Ready: config.ReadyNotify, Exec: exe, Env: append(env, "RELOAD_FAILS=1"),
			StartTimeout: dur(300 * time.Millisecond)})
	sv.StartAll()
	pid := sv.Status("ok").Pid
	if err := sv.ReloadService("ok"); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if st := sv.Status("ok"); st.State != Running || st.Pid != pid {
		t.Errorf("after reload: %s pid %d; want running, pid %d", st.State, st.Pid, pid)
	}
	waitLog(t, sv.Service("ok"), "reloading")

	err := sv.ReloadService("stuck")
	if err == nil || !strings.Contains(err.Error(), "no READY=1") {
		t.Fatalf("reload without READY=1: %v", err)
	}
	if st := sv.Status("stuck"); st.State != Running {
		t.Errorf("after a failed reload: %s; want still running", st.State)
	}
}

func TestReloadAndKillNeedAProcess(t *testing.T) {
	sv := supervisor(t, config.Service{Name: "idle", Exec: sh("sleep 1000")},
		config.Service{Name: "flag", Type: config.TypeOneshot, RemainAfterExit: true, Exec: sh("exit 0")})
	if err := sv.ReloadService("idle"); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("reload of a stopped service: %v", err)
	}
	if err := sv.Kill("idle", unix.SIGTERM, false); err == nil {
		t.Errorf("kill of a stopped service: no error")
	}
	sv.StartAll()
	if err := sv.ReloadService("flag"); err == nil {
		t.Errorf("reload of a oneshot without a process: no error")
	}
	// A simple service's reload is the signal: SIGHUP ends a plain sleep, whose exit is seen.
	pid := sv.Status("idle").Pid
	if err := sv.ReloadService("idle"); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
}

func TestKillMainOnlyOrAll(t *testing.T) {
	sv := supervisor(t, config.Service{Name: "tree", Restart: config.RestartNever,
		Exec: sh(`trap "echo main got TERM" TERM; sleep 1000 & wait; wait`)})
	sv.StartAll()
	s := sv.Service("tree")
	waitFor(t, "a child", func() bool { return len(childrenOf(s.Status().Pid)) == 1 })
	child := childrenOf(s.Status().Pid)[0]
	if err := sv.Kill("tree", unix.SIGTERM, true); err != nil {
		t.Fatal(err)
	}
	waitLog(t, s, "main got TERM")
	if !alive(child) {
		t.Fatalf("--main reached the child too")
	}
	if err := sv.Kill("tree", unix.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	waitGone(t, child)
}
