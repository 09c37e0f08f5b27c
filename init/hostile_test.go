package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A user missing from the passwd file the services run with is a config error at load, with
// file and line, not a service that fails at every start.
func TestSubreaperRefusesUnknownUser(t *testing.T) {
	bin := buildInit(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "users.toml")
	os.WriteFile(cfg, []byte("[[service]]\nname = \"a\"\nexec = [\"/bin/true\"]\nuser = \"baton-no-such-user\"\n"), 0o644)
	out, err := exec.Command(bin, "--config", cfg, "--run-dir", filepath.Join(dir, "run")).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("exit = %v, want status 1", err)
	}
	if !strings.Contains(string(out), cfg+`:4: service[0].user: service "a": user "baton-no-such-user"`) {
		t.Errorf("output does not name file, line and user:\n%s", out)
	}
}
