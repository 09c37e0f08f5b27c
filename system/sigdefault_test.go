package system

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// A child of a process with signals ignored (as under nohup and a shell's background job)
// gets them all at the default after ResetIgnoredSignals. The test runs itself as that process: the shell ignores them, then
// execs the test binary, which resets and starts a shell that prints its own SigIgn.
func TestResetIgnoredSignals(t *testing.T) {
	if os.Getenv("SIGRESET_CHILD") == "1" {
		reset := ResetIgnoredSignals()
		out, err := exec.Command("/bin/sh", "-c", "grep '^SigIgn:' /proc/$$/status").CombinedOutput()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("reset %v", reset)
		if got := strings.Fields(string(out)); len(got) != 2 || got[1] != "0000000000000000" {
			t.Errorf("child's %q, want nothing ignored", strings.TrimSpace(string(out)))
		}
		// Go took SIGQUIT over with its own handler; it kept SIGHUP and SIGINT ignored.
		for _, s := range []int{1, 2} {
			if !slices.Contains(reset, s) {
				t.Errorf("reset %v lacks signal %d, ignored at start", reset, s)
			}
		}
		return
	}
	cmd := exec.Command("/bin/sh", "-c", `trap '' HUP INT QUIT; exec "$0" -test.run '^TestResetIgnoredSignals$' -test.v`, os.Args[0])
	cmd.Env = append(os.Environ(), "SIGRESET_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PASS") {
		t.Errorf("child test: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
