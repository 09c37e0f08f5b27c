package services

import (
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/system"
)

// TestFreezeRestoreInProcess runs a re-exec's supervisor half without the execve: the services
// are frozen and written down (through JSON, as the state travels), a process is killed in the
// gap, and a second supervisor restores them from the state alone, in this process, with a
// reaper of its own. The services keep their pids and their logs, the notify service is still
// ready, nothing was started or signalled, and the process that died in the gap is reaped by
// the new reaper and restarted under its restart policy.
func TestFreezeRestoreInProcess(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	exe, env := helperExec("stopping-on-term")
	cfg := &config.Config{Service: []config.Service{
		{Name: "ready", Ready: config.ReadyNotify, Exec: exe, Env: env, Restart: config.RestartNever},
		{Name: "victim", Exec: sh("echo started; exec sleep 1000"), Restart: config.RestartAlways,
			RestartDelay: dur(10 * time.Millisecond)},
	}}
	for i := range cfg.Service {
		cfg.Service[i].StopTimeout = dur(2 * time.Second)
		cfg.Service[i].ApplyDefaults()
	}
	run := t.TempDir()
	old, err := New(cfg, Options{Log: log, Reaper: reaper, RunDir: run})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range old.StartAll() {
		if r.Err != nil {
			t.Fatalf("start %s: %v", r.Name, r.Err)
		}
	}
	waitLog(t, old.Service("victim"), "started")
	before := map[string]Status{}
	for _, st := range old.Statuses() {
		before[st.Name] = st
	}

	// The old image's side. Its supervisor is left frozen, its fds open, as after an execve
	// nothing of it runs; Close would also remove the notify socket's path, which the
	// restored supervisor still uses.
	reaper.Pause()
	frozen, err := old.Freeze(reaper)
	if err != nil {
		reaper.Resume()
		t.Fatalf("freeze: %v", err)
	}
	if err := unix.Kill(before["victim"].Pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(frozen.Saved)
	if err != nil {
		t.Fatal(err)
	}
	var saved Saved
	if err := json.Unmarshal(data, &saved); err != nil {
		t.Fatal(err)
	}

	// The new image's side: a reaper of its own, paused until every child is adopted. The old
	// one stays paused from here on, as it would be gone.
	next := system.NewPausedReaper(log)
	restored, err := Restore(saved, config.Log{}, Options{Log: log, Reaper: next, RunDir: run})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	sv := restored.SV
	t.Cleanup(func() {
		sv.StopAll()
		sv.Close()
		next.Pause() // for good: two reapers must not both wait for the other tests' children
		reaper.Resume()
	})
	restored.Start()
	next.Resume()

	st := sv.Status("ready")
	if st.Pid != before["ready"].Pid || st.State != Running || st.Restarts != 0 {
		t.Errorf("ready after the restore: %+v; want pid %d, running, not restarted", st, before["ready"].Pid)
	}
	if got := sv.Service("victim").Logs.Tail(0); len(got) == 0 || !strings.Contains(got[0].Text, "started") {
		t.Errorf("victim's log after the restore: %+v; want its line from before", got)
	}
	waitFor(t, "victim restarted after it was killed in the gap", func() bool {
		st := sv.Status("victim")
		return st.State == Running && st.Restarts == 1 && st.Pid != before["victim"].Pid
	})
	if st := sv.Status("victim"); !strings.Contains(st.LastExit, "SIGKILL") {
		t.Errorf("victim's last exit %q, want killed by SIGKILL", st.LastExit)
	}
	// Still a working service: a stop reaches it through the restored supervisor, and it says
	// STOPPING=1 through the notify socket it was given before the re-exec.
	if _, err := sv.Stop("ready"); err != nil {
		t.Errorf("stop ready after the restore: %v", err)
	}
	if st := sv.Status("ready"); st.State != Stopped || !strings.Contains(st.LastExit, "status 0") {
		t.Errorf("ready after its stop: %+v; want stopped, exited 0", st)
	}
}
