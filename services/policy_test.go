package services

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-init/baton/config"
)

// kill_mode = "mixed": the stop signal reaches the main process only; the child it left gets
// SIGKILL once the main process ended (gunicorn's workers finish their requests meanwhile).
func TestKillModeMixed(t *testing.T) {
	for _, tc := range []struct {
		mode      string
		childTERM bool
	}{{config.KillControlGroup, true}, {config.KillMixed, false}} {
		t.Run(tc.mode, func(t *testing.T) {
			dir := t.TempDir()
			ready, childReady := filepath.Join(dir, "ready"), filepath.Join(dir, "child-ready")
			// Each shell says when its trap is set: a stop before the child's would end it
			// without "child got TERM" (seen under load).
			sv := supervisor(t, config.Service{Name: "m", KillMode: tc.mode, Exec: sh(
				`sh -c 'trap "echo child got TERM; exit 0" TERM; touch ` + childReady + `; while :; do sleep 0.02; done' & ` +
					`trap 'echo main got TERM; sleep 0.2; exit 0' TERM; touch ` + ready + `; wait`)})
			sv.StartAll()
			s := sv.Service("m")
			waitFile(t, ready)
			waitFile(t, childReady)
			main := s.Status().Pid
			waitFor(t, "the child", func() bool { return len(childrenOf(main)) == 1 })
			child := childrenOf(main)[0]
			if killed, err := sv.Stop("m"); err != nil || len(killed) > 0 {
				t.Fatalf("stop: %v %v", err, killed)
			}
			waitGone(t, child)
			gotTERM := false
			for _, l := range s.Logs.Tail(0) {
				gotTERM = gotTERM || l.Text == "child got TERM"
			}
			if gotTERM != tc.childTERM {
				t.Errorf("child got TERM: %v, want %v (logs %v)", gotTERM, tc.childTERM, s.Logs.Tail(0))
			}
		})
	}
}

// Which ends each restart policy restarts (systemd's table), success_exit_status and
// restart_prevent_exit_status.
func TestRestartPoliciesByCause(t *testing.T) {
	for _, tc := range []struct {
		name    string
		svc     config.Service
		restart bool
		state   State
	}{
		{"on-abnormal, exit 1", config.Service{Restart: config.RestartOnAbnormal, Exec: sh("sleep 0.1; exit 1")}, false, Failed},
		{"on-abnormal, killed", config.Service{Restart: config.RestartOnAbnormal, Exec: sh("sleep 0.1; kill -KILL $$")}, true, ""},
		{"on-watchdog, killed", config.Service{Restart: config.RestartOnWatchdog, Exec: sh("sleep 0.1; kill -KILL $$")}, false, Failed},
		{"on-watchdog, watchdog", config.Service{Restart: config.RestartOnWatchdog, Watchdog: dur(150 * time.Millisecond), Exec: sh("exec sleep 100")}, true, ""},
		{"success_exit_status", config.Service{Restart: config.RestartOnFailure, SuccessExitStatus: []int{1}, Exec: sh("sleep 0.1; exit 1")}, false, Stopped},
		{"restart_prevent_exit_status", config.Service{Restart: config.RestartAlways, RestartPreventExitStatus: []int{3}, Exec: sh("sleep 0.1; exit 3")}, false, Failed},
		{"always, other status", config.Service{Restart: config.RestartAlways, RestartPreventExitStatus: []int{3}, Exec: sh("sleep 0.1; exit 4")}, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.svc.Name = "p"
			sv := supervisor(t, tc.svc)
			sv.StartAll()
			s := sv.Service("p")
			if tc.restart {
				if !s.WaitUntil(func(st Status) bool { return st.Restarts > 0 }, 5*time.Second) {
					t.Fatalf("not restarted: %+v", s.Status())
				}
				return
			}
			if !s.WaitUntil(func(st Status) bool { return st.State == tc.state }, 5*time.Second) {
				t.Fatalf("state %s (%s), want %s", s.Status().State, s.Status().LastExit, tc.state)
			}
			time.Sleep(300 * time.Millisecond) // a restart would come after restart_delay (100ms)
			if st := s.Status(); st.Restarts != 0 || st.State != tc.state {
				t.Errorf("restarted: %+v", st)
			}
		})
	}
}

// watchdog_signal: SIGABRT by default (a hung service can dump core), then SIGKILL after
// stop_timeout for one that ignores it.
func TestWatchdogSignalThenKill(t *testing.T) {
	sv := supervisor(t,
		// Watchdogs long enough for the exec shim (a Go program) to have exec'd the service on
		// a loaded machine: an ABRT during its runtime start ends it otherwise (seen under load).
		config.Service{Name: "abrt", Watchdog: dur(2 * time.Second), Exec: sh("exec sleep 100")},
		// And for sh to set its trap: an ABRT before it would kill it with SIGABRT.
		config.Service{Name: "stubborn", Watchdog: dur(2 * time.Second), StopTimeout: dur(300 * time.Millisecond),
			Exec: sh(`trap "echo ignored ABRT" ABRT; while :; do sleep 0.02; done`)})
	sv.StartAll()
	a, b := sv.Service("abrt"), sv.Service("stubborn")
	if !a.WaitUntil(func(st Status) bool { return st.State == Failed }, 20*time.Second) || !strings.Contains(a.Status().LastExit, "SIGABRT") {
		t.Errorf("abrt: %+v; want failed, killed by SIGABRT", a.Status())
	}
	if !b.WaitUntil(func(st Status) bool { return st.State == Failed }, 20*time.Second) || !strings.Contains(b.Status().LastExit, "SIGKILL") {
		t.Errorf("stubborn: %+v; want failed, killed by SIGKILL after stop_timeout", b.Status())
	}
	waitLog(t, b, "ignored ABRT")
}
