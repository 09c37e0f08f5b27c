package main

import (
	"bufio"
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

// startInit runs init in subreaper mode, with extra inherited fds from 3 on, and returns it
// with its output, line by line (closed when it ends). The output is always drained, so init
// never blocks on it, whatever the test waits for.
func startInit(t *testing.T, bin, cfg string, extra ...*os.File) (*exec.Cmd, <-chan string) {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "baton.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfgPath, "--run-dir", filepath.Join(dir, "run"))
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr, cmd.Stdout, cmd.ExtraFiles = pw, pw, extra
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan string, 10000)
	go func() {
		defer pr.Close()
		defer close(lines)
		for sc := bufio.NewScanner(pr); sc.Scan(); {
			lines <- sc.Text()
		}
	}()
	return cmd, lines
}

// waitLine returns the next line of init's output that contains substr.
func waitLine(t *testing.T, lines <-chan string, substr string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("output ended without %q", substr)
			}
			t.Log(line)
			if strings.Contains(line, substr) {
				return line
			}
		case <-timeout:
			t.Fatalf("no %q within 10s", substr)
		}
	}
}

// stopInit sends SIGTERM and expects init to exit with status 0.
func stopInit(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
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

func TestSubreaperReapsOrphansAndStopsOnSIGTERM(t *testing.T) {
	bin := buildInit(t)
	pidFile := filepath.Join(t.TempDir(), "orphan.pid")
	cmd, lines := startInit(t, bin, `
[[service]]
name = "orphaner"
exec = ["/bin/sh", "-c", "sh -c 'sleep 1 & echo $! > `+pidFile+`'; exec sleep 1000"]
stop_timeout = "2s"
`)
	waitLine(t, lines, "all services started")
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
	stopInit(t, cmd)
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

// A SIGHUP (the terminal that started baton closed) must not end it and orphan its services.
func TestSubreaperSurvivesSIGHUP(t *testing.T) {
	bin := buildInit(t)
	cmd, lines := startInit(t, bin, `
[[service]]
name = "sleeper"
exec = ["/bin/sh", "-c", "echo pid=$$; exec sleep 1000"]
stop_timeout = "2s"
`)
	_, after, _ := strings.Cut(waitLine(t, lines, "sleeper: pid="), "sleeper: pid=")
	pid, err := strconv.Atoi(after)
	if err != nil {
		t.Fatalf("service pid %q: %v", after, err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLine(t, lines, "SIGHUP ignored")
	if st, err := system.ReadProcStat(pid); err != nil || st.State == 'Z' || st.PPid != cmd.Process.Pid {
		t.Errorf("service pid %d after SIGHUP: %+v, %v; want it running, a child of baton (%d)", pid, st, err, cmd.Process.Pid)
	}
	stopInit(t, cmd)
}

// Fds baton inherited (here fd 22) must not reach its services: a service with no sockets and
// no fd store has exactly stdin, stdout, stderr and its control channel.
func TestSubreaperPassesNoInheritedFdToServices(t *testing.T) {
	bin := buildInit(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	extra := make([]*os.File, 20) // nil entries are closed in the child: r arrives as fd 22
	extra[19] = r
	// [ -e ] stats each /proc/$$/fd entry without opening anything, unlike ls or a glob.
	cmd, lines := startInit(t, bin, `
[[service]]
name = "fds"
exec = ["/bin/sh", "-c", "i=0; fds=; while [ $i -lt 1024 ]; do [ -e /proc/$$/fd/$i ] && fds=\"$fds $i\"; i=$((i+1)); done; echo \"fds:$fds ctl=$BATON_CTL_FD\"; exec sleep 1000"]
ready = "started"
stop_timeout = "2s"
`, extra...)
	_, got, _ := strings.Cut(waitLine(t, lines, "fds: fds:"), "fds: fds:")
	fds, ctl, _ := strings.Cut(got, " ctl=")
	if want := "0 1 2 " + ctl; strings.TrimSpace(fds) != want {
		t.Errorf("service has fds %q, want %q (stdio and BATON_CTL_FD=%s)", strings.TrimSpace(fds), want, ctl)
	}
	stopInit(t, cmd)
}

// A signal baton was started with ignored (nohup, or a shell's trap with an empty action) must not stay ignored in
// its services: SIG_IGN survives execve, so a service started by a baton under nohup would not
// stop on SIGHUP, nor a daemon on SIGINT, nor a pipeline on SIGPIPE. baton catches what it
// handles, and Go's runtime takes over the rest, so execve resets them all to the default.
func TestSubreaperServicesDoNotInheritIgnoredSignals(t *testing.T) {
	bin := buildInit(t)
	wrapper := filepath.Join(t.TempDir(), "init-nohup")
	script := "#!/bin/sh\ntrap '' HUP INT QUIT USR1 USR2 PIPE TERM\nexec " + bin + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd, lines := startInit(t, wrapper, `
[[service]]
name = "sigs"
exec = ["/bin/sh", "-c", "echo \"masks: $(grep -E '^Sig(Ign|Blk):' /proc/$$/status | tr -s '\\t\\n' '  ')\"; exec sleep 1000"]
ready = "started"
stop_timeout = "2s"
`)
	_, got, _ := strings.Cut(waitLine(t, lines, "sigs: masks:"), "sigs: masks:")
	if want := "SigBlk: 0000000000000000 SigIgn: 0000000000000000"; strings.TrimSpace(got) != want {
		t.Errorf("service started by a baton with HUP INT QUIT USR1 USR2 PIPE TERM ignored has %q, want %q", strings.TrimSpace(got), want)
	}
	stopInit(t, cmd)
}
