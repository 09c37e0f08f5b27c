package services

import (
	"testing"

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
