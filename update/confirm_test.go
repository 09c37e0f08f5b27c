package update

import (
	"testing"
	"time"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/services"
)

// A service the boot held down because it conflicts with one listed before it is not meant to
// run: the confirmation waits for the one that runs, not for it.
func TestConfirmDoesNotWaitForAServiceHeldByAConflict(t *testing.T) {
	cfg := &config.Config{Service: []config.Service{
		{Name: "web", Exec: []string{"/bin/sleep", "100"}},
		{Name: "maintenance", Exec: []string{"/bin/sleep", "100"}, Conflicts: []string{"web"}},
	}}
	for i := range cfg.Service {
		cfg.Service[i].ApplyDefaults()
	}
	sv, err := services.New(cfg, services.Options{Log: testLog(), Reaper: reaper, RunDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sv.StopAll(); sv.Close() })
	sv.StartAll()
	if st := sv.Status("maintenance"); st.State != services.Stopped || st.HeldBy != "web" {
		t.Fatalf("maintenance is %s, held by %q: the boot should have held it (web is listed first)", st.State, st.HeldBy)
	}
	u := &Updater{Log: testLog(), SV: sv, ConfirmTimeout: 2 * time.Second}
	if why := u.confirm(nil); why != "" {
		t.Errorf("confirm: %s; want confirmed (web runs, maintenance is held by the conflict)", why)
	}
	// What it still waits for: web stopped outside any conflict is a service not running.
	if _, err := sv.Stop("web"); err != nil {
		t.Fatal(err)
	}
	u.ConfirmTimeout = 200 * time.Millisecond
	if why := u.confirm(nil); why == "" {
		t.Error("confirm passed with web stopped")
	}
}
