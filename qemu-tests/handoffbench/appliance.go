// Package handoffbench runs baton in subreaper mode on the host with the demo web and stream
// services on held loopback sockets, drives load at them while services are upgraded (or, as
// the baseline, restarted), and counts what the clients saw. The test in this package runs it
// small and asserts nothing was lost; cmd/bench-handoff runs it large for make bench.
package handoffbench

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/baton-init/baton/control"
)

// Appliance is baton running on the host with the demo services.
type Appliance struct {
	Dir        string
	Bin        string // directory of the built binaries
	WebAddr    string
	StreamAddr string
	Client     *control.Client
	cmd        *exec.Cmd
	output     *lockedBuffer
}

// Build compiles init, web and stream from the repository at root into dir/bin.
func Build(root, dir string) (string, error) {
	bin := filepath.Join(dir, "bin")
	for name, pkg := range map[string]string{"init": "./init", "web": "./examples/web", "stream": "./examples/stream"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, name), pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return bin, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Start writes the config and starts baton; it returns once both services are running.
// With held false, web gets no socket from baton and listens itself: the baseline of a
// service that owns its socket.
func Start(bin, dir string, held bool) (*Appliance, error) { return StartConfig(bin, dir, held, "") }

// StartConfig is Start with more of the config (extra services) appended.
func StartConfig(bin, dir string, held bool, extra string) (*Appliance, error) {
	a := &Appliance{Dir: dir, Bin: bin, output: &lockedBuffer{}}
	var err error
	if a.WebAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	if a.StreamAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	// Each service gets a held socket; its -addr (where it would listen without baton) is
	// unusable, so a run fails if the socket is not passed. The baseline without a held socket
	// lets web listen on its address itself.
	service := func(name, socket, addr string, held bool) string {
		own := "127.0.0.1:1"
		if !held {
			own = addr
		}
		s := fmt.Sprintf("\n[[service]]\nname = %q\nexec = [%q, \"-addr\", %q]\nready = \"notify\"\nrestart = \"always\"\nstop_timeout = \"5s\"\n",
			name, filepath.Join(bin, name), own)
		if held {
			s += fmt.Sprintf("  [[service.socket]]\n  name = %q\n  listen = \"tcp://%s\"\n", socket, addr)
		}
		return s
	}
	cfg := service("web", "http", a.WebAddr, held) + service("stream", "stream", a.StreamAddr, true) + extra
	cfgPath := filepath.Join(dir, "baton.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	runDir := filepath.Join(dir, "run")
	a.cmd = exec.Command(filepath.Join(bin, "init"), "--config", cfgPath, "--run-dir", runDir)
	pr, pw := io.Pipe()
	a.cmd.Stdout, a.cmd.Stderr = pw, pw
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	started := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			a.output.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "all services started") {
				started <- true
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		a.Stop()
		return nil, fmt.Errorf("baton did not start its services within 30s:\n%s", a.Output())
	}
	a.Client = control.NewLocal(filepath.Join(runDir, "control.sock"))
	return a, nil
}

// Output is everything baton and the services printed.
func (a *Appliance) Output() string { return a.output.String() }

// Stop ends baton (SIGTERM) and waits for it.
func (a *Appliance) Stop() error {
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		_ = a.cmd.Process.Kill()
		return fmt.Errorf("baton still running 20s after SIGTERM")
	}
}
