package main

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-init/baton/system"
)

// buildInit builds the init binary once for the tests of this file.
func buildInit(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "init")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startInit runs init in subreaper mode and returns it with a reader of its log lines.
func startInit(t *testing.T, bin, cfg string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "baton.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfgPath, "--run-dir", filepath.Join(dir, "run"))
	pr, pw := io.Pipe()
	cmd.Stderr, cmd.Stdout = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); pw.Close() })
	return cmd, bufio.NewScanner(pr)
}

func waitLine(t *testing.T, sc *bufio.Scanner, substr string) string {
	t.Helper()
	found := make(chan string, 1)
	go func() {
		for sc.Scan() {
			t.Log(sc.Text())
			if strings.Contains(sc.Text(), substr) {
				found <- sc.Text()
				for sc.Scan() { // keep draining so the child never blocks on its output
					t.Log(sc.Text())
				}
				return
			}
		}
		close(found)
	}()
	select {
	case line, ok := <-found:
		if !ok {
			t.Fatalf("output ended without %q", substr)
		}
		return line
	case <-time.After(10 * time.Second):
		t.Fatalf("no %q within 10s", substr)
	}
	return ""
}

func TestSubreaperReapsOrphansAndStopsOnSIGTERM(t *testing.T) {
	bin := buildInit(t)
	pidFile := filepath.Join(t.TempDir(), "orphan.pid")
	cmd, sc := startInit(t, bin, `
[[service]]
name = "orphaner"
exec = ["/bin/sh", "-c", "sh -c 'sleep 1 & echo $! > `+pidFile+`'; exec sleep 1000"]
stop_timeout = "2s"
`)
	waitLine(t, sc, "all services started")
	var orphan int
	deadline := time.Now().Add(5 * time.Second)
	for orphan == 0 && time.Now().Before(deadline) {
		b, _ := os.ReadFile(pidFile)
		orphan, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(10 * time.Millisecond) // written by the script; no event to wait on
	}
	if orphan == 0 {
		t.Fatal("the service never wrote its orphan's pid")
	}
	if st, err := system.ReadProcStat(orphan); err == nil && st.PPid != cmd.Process.Pid {
		t.Errorf("orphan %d has parent %d, want the subreaper %d", orphan, st.PPid, cmd.Process.Pid)
	}
	// It lives 1s; then only baton can reap it. A zombie would stay in /proc as state Z.
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, err := system.ReadProcStat(orphan)
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphan %d not reaped (state %c)", orphan, st.State)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("init exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("init still running 10s after SIGTERM")
	}
}

func TestSubreaperRefusesBadConfig(t *testing.T) {
	bin := buildInit(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bad.toml")
	os.WriteFile(cfg, []byte("[[service]]\nname = \"a\"\nexec = [\"/bin/true\"]\nafter = [\"b\"]\n[[service]]\nname = \"b\"\nexec = [\"/bin/true\"]\nafter = [\"a\"]\nstop_timout = \"1s\"\n"), 0o644)
	out, err := exec.Command(bin, "--config", cfg, "--run-dir", filepath.Join(dir, "run")).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("exit = %v, want status 1", err)
	}
	if !strings.Contains(string(out), cfg+":9: service.stop_timout: unknown key") {
		t.Errorf("output does not name file, line and key:\n%s", out)
	}
}
