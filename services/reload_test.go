package services

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/baton-init/baton/config"
)

func TestReloadAppliesTheLeastDisruptiveChange(t *testing.T) {
	exe, env := helperExec("env")
	base := []config.Service{
		{Name: "same", Exec: sh("exec sleep 100")},
		{Name: "newenv", Exec: exe, Env: env, Ready: config.ReadyNotify},
		{Name: "setting", Exec: sh("exec sleep 100")},
		{Name: "sock", Exec: sh("exec sleep 100"), Socket: []config.Socket{{Name: "s", Listen: "tcp://127.0.0.1:0"}}},
		{Name: "gone", Exec: sh("exec sleep 100")},
		{Name: "idle", Exec: sh("exec sleep 100")},
	}
	sv := supervisor(t, base...)
	for _, r := range sv.StartAll() {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	sv.Stop("idle")
	pids := map[string]int{}
	for _, st := range sv.Statuses() {
		pids[st.Name] = st.Pid
	}

	next := append([]config.Service(nil), base...)
	next[1].Env = append(append([]string(nil), env...), "NEW=1")
	next[2].StopTimeout = dur(3 * time.Second)
	next[3].Socket = []config.Socket{{Name: "s", Listen: "tcp://127.0.0.1:0"}, {Name: "t", Listen: "tcp://127.0.0.1:0"}}
	next[5].Exec = sh("exec sleep 200")
	next = append(next[:4], next[5:]...) // "gone" removed
	next = append(next, config.Service{Name: "added", Exec: sh("exec sleep 100")})
	cfg := &config.Config{Service: next}
	for i := range cfg.Service {
		s := &cfg.Service[i]
		if s.Restart == "" {
			s.Restart = config.RestartNever
		}
		if s.StopTimeout.Duration == 0 {
			s.StopTimeout.Duration = 2 * time.Second
		}
		s.ApplyDefaults()
	}
	rep := sv.Reload(cfg)
	if len(rep.Errors) > 0 {
		t.Fatalf("errors: %v", rep.Errors)
	}
	want := ReloadReport{Unchanged: []string{"same"}, Upgraded: []string{"newenv"}, Restarted: []string{"setting"},
		Replaced: []string{"sock"}, Started: []string{"added"}, Stopped: []string{"gone"}, Configured: []string{"idle"}}
	if !slices.Equal(rep.Unchanged, want.Unchanged) || !slices.Equal(rep.Upgraded, want.Upgraded) ||
		!slices.Equal(rep.Restarted, want.Restarted) || !slices.Equal(rep.Replaced, want.Replaced) ||
		!slices.Equal(rep.Started, want.Started) || !slices.Equal(rep.Stopped, want.Stopped) ||
		!slices.Equal(rep.Configured, want.Configured) {
		t.Fatalf("report %+v, want %+v", rep, want)
	}
	st := map[string]Status{}
	var names []string
	for _, s := range sv.Statuses() {
		st[s.Name] = s
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "same,newenv,setting,sock,idle,added" {
		t.Errorf("services now: %v", names)
	}
	if st["same"].Pid != pids["same"] {
		t.Errorf("unchanged service restarted: pid %d → %d", pids["same"], st["same"].Pid)
	}
	for _, n := range []string{"newenv", "setting", "sock"} {
		if st[n].Pid == pids[n] || st[n].State != Running {
			t.Errorf("%s not switched: %+v (pid before %d)", n, st[n], pids[n])
		}
	}
	if st["newenv"].Upgrades != 1 || len(st["sock"].Sockets) != 2 || st["idle"].State != Stopped || st["added"].State != Running {
		t.Errorf("statuses: %+v", st)
	}
	// The upgraded config is the service's from now on: a restart runs it again.
	if err := sv.Restart("newenv"); err != nil {
		t.Fatal(err)
	}
	// READY=1 can overtake the lines printed before it: baton reads the log pipe on its own.
	n, deadline := 0, time.Now().Add(5*time.Second)
	for n != 2 && time.Now().Before(deadline) {
		n = 0
		for _, l := range sv.Service("newenv").Logs.Tail(0) {
			if l.Text == "env: NEW=1" {
				n++
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n != 2 {
		t.Errorf("NEW=1 seen by %d runs, want 2 (the upgrade and the restart after it)", n)
	}
	if err := sv.Start("idle"); err != nil {
		t.Fatal(err)
	}
	if got := sv.Service("idle").Spec().Exec; !slices.Equal(got, sh("exec sleep 200")) {
		t.Errorf("idle started with %v, want its reloaded exec", got)
	}
}
