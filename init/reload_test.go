package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// initctl runs the init binary as initctl against a subreaper's socket.
func initctl(t *testing.T, bin, sock string, args ...string) (string, int) {
	t.Helper()
	link := filepath.Join(filepath.Dir(bin), "initctl")
	if _, err := os.Lstat(link); err != nil {
		if err := os.Symlink(bin, link); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(link, append([]string{"--socket", sock}, args...)...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// initctl reload-config: a broken file changes nothing; a good one stops the removed service,
// starts the added one, restarts the changed one and leaves the unchanged one alone.
func TestReloadConfig(t *testing.T) {
	bin := buildInit(t)
	dir := t.TempDir()
	cfgPath, run := filepath.Join(dir, "baton.toml"), filepath.Join(dir, "run")
	write := func(cfg string) {
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("[[service]]\nname = \"keep\"\nexec = [\"/bin/sleep\", \"100\"]\n" +
		"[[service]]\nname = \"change\"\nexec = [\"/bin/sleep\", \"100\"]\n" +
		"[[service]]\nname = \"drop\"\nexec = [\"/bin/sleep\", \"100\"]\n")
	cmd := exec.Command(bin, "--config", cfgPath, "--run-dir", run)
	pr, pw, _ := os.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan string, 1000)
	go func() {
		defer close(lines)
		for sc := bufio.NewScanner(pr); sc.Scan(); {
			lines <- sc.Text()
		}
	}()
	waitLine(t, lines, "all services started")
	sock := filepath.Join(run, "control.sock")
	pid := func(name string) string {
		out, _ := initctl(t, bin, sock, "status", name)
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "pid:" {
				return f[1]
			}
		}
		t.Fatalf("no pid for %s in\n%s", name, out)
		return ""
	}
	keep, change := pid("keep"), pid("change")

	write("[[service]]\nname = \"keep\"\nexec = [\"/bin/sleep\", \"100\"]\nbogus = 1\n")
	out, code := initctl(t, bin, sock, "reload-config")
	if code != 1 || !strings.Contains(out, "baton.toml:4") || !strings.Contains(out, "nothing changed") {
		t.Errorf("broken config: exit %d\n%s", code, out)
	}
	if pid("change") != change {
		t.Error("a broken config changed a service")
	}

	write("[[service]]\nname = \"keep\"\nexec = [\"/bin/sleep\", \"100\"]\n" +
		"[[service]]\nname = \"change\"\nexec = [\"/bin/sleep\", \"100\"]\nstop_timeout = \"3s\"\n" +
		"[[service]]\nname = \"add\"\nexec = [\"/bin/sleep\", \"100\"]\n")
	out, code = initctl(t, bin, sock, "reload-config")
	for _, want := range []string{"stopped (removed): drop", "started (added): add", "restarted (settings): change", "unchanged: keep"} {
		if !strings.Contains(out, want) {
			t.Errorf("reload-config output lacks %q: exit %d\n%s", want, code, out)
		}
	}
	if pid("keep") != keep || pid("change") == change {
		t.Errorf("keep %s→%s (want the same), change %s→%s (want another)", keep, pid("keep"), change, pid("change"))
	}
	if out, code := initctl(t, bin, sock, "status", "drop"); code != 3 {
		t.Errorf("removed service still known: exit %d\n%s", code, out)
	}
	stopInit(t, cmd)
}
