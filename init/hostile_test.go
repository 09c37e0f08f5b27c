package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/kexec"
	"github.com/baton-init/baton/services"
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

// fdCount is how many fds process pid has open.
func fdCount(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

// A flood of TCP connections that never send a byte, against the remote API of a subreaper
// whose fd limit the test lowers to 512 (so that the flood is small and quick): baton keeps
// its reserve, the local API answers throughout, and a service killed during the flood is
// restarted. Before the limits, baton reached 512/512 fds, `initctl status` failed with
// "too many open files" and the service stayed down.
func TestSubreaperRemoteFloodKeepsFdReserve(t *testing.T) {
	bin := buildInit(t)
	tlsDir := t.TempDir()
	if err := control.GenerateTLS(tlsDir, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	cmd, lines := startInit(t, bin, `
[control]
remote = "127.0.0.1:0"
tls_dir = "`+tlsDir+`"

[[service]]
name = "victim"
exec = ["/bin/sleep", "1000"]
restart = "always"
restart_delay = "10ms"
stop_timeout = "2s"
`)
	line := waitLine(t, lines, "remote control API listening")
	_, addr, _ := strings.Cut(line, "addr=")
	addr = strings.TrimSpace(addr)
	waitLine(t, lines, "all services started")
	go func() { // keep draining: the test reads the output only at the end
		for range lines {
		}
	}()
	const limit = 512
	pid := cmd.Process.Pid
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit, Max: limit}, nil); err != nil {
		t.Fatalf("prlimit: %v", err)
	}
	sock := filepath.Join(filepath.Dir(cmd.Args[2]), "run", "control.sock")
	c := control.NewLocal(sock)
	before, err := c.Service("victim")
	if err != nil {
		t.Fatal(err)
	}

	// The flood: 2,000 connections (4 times the limit), bounded to 10 s.
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	peak := 0
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < 2000 && time.Now().Before(deadline); i++ {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue // the backlog is full: that is the kernel refusing, not baton's fds
		}
		conns = append(conns, conn)
		if i%50 == 0 {
			peak = max(peak, fdCount(pid))
		}
	}
	// During the flood (the connections are all still open): kill the service; the local API
	// answers and the service comes back.
	unix.Kill(before.Pid, unix.SIGKILL)
	type answer struct {
		st  services.Status
		err error
	}
	var got answer
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); {
		ch := make(chan answer, 1)
		go func() { st, err := c.Service("victim"); ch <- answer{st, err} }()
		select {
		case got = <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal("local initctl status did not answer within 10 s during the flood")
		}
		peak = max(peak, fdCount(pid))
		if got.err == nil && got.st.State == services.Running && got.st.Pid != before.Pid {
			break
		}
		time.Sleep(50 * time.Millisecond) // the restart is observed through the API
	}
	t.Logf("%d connections open to the remote port; baton's fds at the peak: %d of %d", len(conns), peak, limit)
	if got.err != nil || got.st.State != services.Running || got.st.Pid == before.Pid {
		t.Errorf("victim after a kill during the flood: %+v, %v; want running again", got.st, got.err)
	}
	if peak > limit-control.DefaultFDReserve+16 {
		t.Errorf("baton had %d fds at the peak; the reserve keeps it at %d or less", peak, limit-control.DefaultFDReserve)
	}
	stopInit(t, cmd)
}

// A second kexec while the first one's kernel is still loading gets baton's own answer, not
// the kernel's raw EBUSY; the control API turns every kexec refusal into 409.
func TestKexecWhileLoadingIsRefused(t *testing.T) {
	m := newMachine(io.Discard)
	loading, release := make(chan struct{}), make(chan struct{})
	loadKernel = func(kexec.Image, kexec.Method) (kexec.Result, error) {
		close(loading)
		<-release
		return kexec.Result{Method: kexec.File}, nil
	}
	defer func() { loadKernel = kexec.LoadWith }()
	req := control.KexecRequest{Kernel: "/boot/vmlinuz", Cmdline: "console=ttyS0", LoadOnly: true}
	first := make(chan error, 1)
	go func() { _, err := m.kexecRequest(req); first <- err }()
	<-loading
	_, err := m.kexecRequest(req)
	if err == nil || !strings.Contains(err.Error(), "a kexec is already in progress") {
		t.Errorf("second kexec during a load: %v, want \"a kexec is already in progress\"", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Errorf("first kexec: %v", err)
	}
}
