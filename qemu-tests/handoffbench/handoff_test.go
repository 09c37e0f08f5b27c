package handoffbench

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestUpgradesUnderLoadLoseNothing upgrades both demo services repeatedly while HTTP requests
// (a new connection each) and long-lived stream connections run: no request may fail and no
// long-lived connection may break or lose count. A plain restart in the same run must lose
// some, or the test measures nothing.
func TestUpgradesUnderLoadLoseNothing(t *testing.T) {
	root, _ := filepath.Abs("../..")
	dir := t.TempDir()
	bin, err := Build(root, dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Start(bin, dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := a.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if t.Failed() {
			t.Logf("baton output:\n%s", a.Output())
		}
	}()
	up := Phase(a, "upgrade", 8, 8, 8)
	re := Phase(a, "restart", 3, 8, 8)
	t.Logf("\n%s", Table([]Result{up, re}))
	if len(up.Errors) > 0 {
		t.Errorf("upgrades failed: %v", up.Errors)
	}
	if up.Requests < 100 || up.LongLines < 100 {
		t.Errorf("too little load to mean anything: %d requests, %d lines", up.Requests, up.LongLines)
	}
	if up.Failed != 0 || up.LongLost != 0 {
		t.Errorf("upgrades lost %d requests and %d long-lived connections: %v %v", up.Failed, up.LongLost, up.FailedWhy, up.LostWhy)
	}
	if re.LongLost == 0 {
		t.Errorf("restarts lost no long-lived connection: the load does not see what it should")
	}
	if got := strings.Count(a.Output(), "handed"); got < 8 {
		t.Errorf("stream logged %d handoffs, want one per upgrade", got)
	}
}
