package services

import (
	"strings"
	"testing"
	"time"

	"github.com/baton-init/baton/config"
)

func TestConflictsStopTheOther(t *testing.T) {
	sv := supervisor(t,
		config.Service{Name: "a", Exec: sh("exec sleep 100")},
		config.Service{Name: "b", Exec: sh("exec sleep 100"), Conflicts: []string{"a"}})
	if err := sv.Start("a"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ start, other string }{{"b", "a"}, {"a", "b"}} { // both ways
		if err := sv.Start(tc.start); err != nil {
			t.Fatal(err)
		}
		if st := sv.Status(tc.start).State; st != Running {
			t.Errorf("%s is %s after its start; want running", tc.start, st)
		}
		if st := sv.Status(tc.other).State; st != Stopped {
			t.Errorf("starting %s left %s %s; want stopped", tc.start, tc.other, st)
		}
	}
}

func TestWantsPullsInWithoutFailing(t *testing.T) {
	sv := supervisor(t,
		config.Service{Name: "helper", Exec: sh("exec sleep 100")},
		config.Service{Name: "broken", Exec: []string{"/nonexistent/broken"}}, // its start fails
		config.Service{Name: "web", Exec: sh("exec sleep 100"), Wants: []string{"helper", "broken"}})
	if err := sv.Start("web"); err != nil {
		t.Fatalf("start web: %v; a wanted service's failure must not fail it", err)
	}
	if st := sv.Status("helper").State; st != Running {
		t.Errorf("wanted helper is %s; want running (pulled in)", st)
	}
	if st := sv.Status("broken"); st.State != Failed || st.Error == "" {
		t.Errorf("wanted broken is %s (%q); want failed with the reason (it was tried)", st.State, st.Error)
	}
	if st := sv.Status("web").State; st != Running {
		t.Errorf("web is %s; want running", st)
	}
}

// At boot, of two conflicting services only the one listed first starts; the other stays
// stopped with the conflict as its status, and an explicit start switches them over.
func TestConflictsAtBootFirstListedStarts(t *testing.T) {
	sv := supervisor(t,
		config.Service{Name: "web", Exec: sh("exec sleep 100")},
		config.Service{Name: "maintenance", Exec: sh("exec sleep 100"), Conflicts: []string{"web"}},
		config.Service{Name: "other", Exec: sh("exec sleep 100")})
	for _, r := range sv.StartAll() {
		if r.Err != nil {
			t.Fatalf("%s: %v; a held service is not a failed start", r.Name, r.Err)
		}
	}
	if st := sv.Status("web"); st.State != Running || st.HeldBy != "" {
		t.Errorf("web (listed first) is %s, held by %q; want running", st.State, st.HeldBy)
	}
	if st := sv.Status("other").State; st != Running {
		t.Errorf("other (no conflict) is %s; want running", st)
	}
	st := sv.Status("maintenance")
	if st.State != Stopped || st.Pid != 0 || st.HeldBy != "web" || !strings.Contains(st.Status, "conflicts with web") {
		t.Errorf("maintenance: %s, pid %d, held by %q, status %q; want stopped, held by web, the conflict said", st.State, st.Pid, st.HeldBy, st.Status)
	}
	if err := sv.Start("maintenance"); err != nil {
		t.Fatal(err)
	}
	if st := sv.Status("maintenance"); st.State != Running || st.HeldBy != "" || st.Status != "" {
		t.Errorf("maintenance after initctl start: %s, held by %q, status %q; want running, no longer held", st.State, st.HeldBy, st.Status)
	}
	if st := sv.Status("web"); st.State != Stopped || st.HeldBy != "maintenance" {
		t.Errorf("web after maintenance's start: %s, held by %q; want stopped, held by maintenance", st.State, st.HeldBy)
	}
}

// reload-config does not start an added service that conflicts with one that runs.
func TestReloadHoldsAnAddedConflict(t *testing.T) {
	web := config.Service{Name: "web", Exec: sh("exec sleep 100"), Restart: config.RestartNever, StopTimeout: dur(2 * time.Second)}
	web.ApplyDefaults()
	sv := supervisor(t, web)
	sv.StartAll()
	extra := config.Service{Name: "maintenance", Exec: sh("exec sleep 100"), Conflicts: []string{"web"}, Restart: config.RestartNever, StopTimeout: dur(2 * time.Second)}
	extra.ApplyDefaults()
	rep := sv.Reload(&config.Config{Service: []config.Service{web, extra}})
	if len(rep.Held) != 1 || rep.Held[0] != "maintenance" || len(rep.Started) != 0 || len(rep.Errors) != 0 {
		t.Errorf("reload report %+v; want maintenance held, nothing started", rep)
	}
	if st := sv.Status("maintenance"); st.State != Stopped || st.HeldBy != "web" {
		t.Errorf("maintenance: %s, held by %q; want stopped, held by web", st.State, st.HeldBy)
	}
	if st := sv.Status("web").State; st != Running {
		t.Errorf("web is %s; want running", st)
	}
}
