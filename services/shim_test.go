package services

import (
	"os"
	"path/filepath"
	"testing"
)

// The small baton-exec beside the running binary is the shim when it is there and executable;
// else the running binary itself (or the image's /lib/baton/baton-exec, absent on a build host).
func TestFindShim(t *testing.T) {
	if _, err := os.Stat("/lib/baton/baton-exec"); err == nil {
		t.Skip("this host has /lib/baton/baton-exec")
	}
	dir := t.TempDir()
	self := filepath.Join(dir, "init")
	if got := findShim(self); got != self {
		t.Errorf("findShim with no baton-exec = %q, want the running binary %q", got, self)
	}
	shim := filepath.Join(dir, "baton-exec")
	if err := os.WriteFile(shim, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := findShim(self); got != self {
		t.Errorf("findShim with a baton-exec that is not executable = %q, want %q", got, self)
	}
	if err := os.Chmod(shim, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := findShim(self); got != shim {
		t.Errorf("findShim = %q, want the baton-exec beside it, %q", got, shim)
	}
}
