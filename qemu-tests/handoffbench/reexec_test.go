package handoffbench

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/services"
)

// victim is a service without sockets, killed in the gap of a re-exec.
const victim = "\n[[service]]\nname = \"victim\"\nexec = [\"/bin/sleep\", \"100000\"]\nrestart = \"always\"\nrestart_delay = \"50ms\"\n"

func startReexecAppliance(t *testing.T) (*Appliance, string, string) {
	t.Helper()
	root, _ := filepath.Abs("../..")
	dir := t.TempDir()
	bin, err := Build(root, dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := StartConfig(bin, dir, true, victim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if t.Failed() {
			t.Logf("baton output:\n%s", a.Output())
		}
	})
	return a, root, dir
}

func pids(t *testing.T, c *control.Client) map[string]services.Status {
	t.Helper()
	list, err := c.Services()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]services.Status{}
	for _, s := range list {
		out[s.Name] = s
	}
	return out
}

func httpClient() *http.Client {
	return &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
}

// fds lists what process pid has open, fd → what it is.
func fds(pid int) []string {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	var out []string
	for _, e := range ents {
		what, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		out = append(out, e.Name()+"→"+what)
	}
	return out
}

// TestReexecUnderLoadLosesNothing re-executes baton (subreaper mode) 20 times while 16
// clients request the held-socket web service, a new connection each, and 16 long-lived
// stream connections count lines: no request fails, no connection breaks, the services keep
// their pids, and baton's fds are exactly what they were. Then a process that ends in the
// gap (killed while the new image is not restoring yet) is reaped by the new image and its
// service restarted.
func TestReexecUnderLoadLosesNothing(t *testing.T) {
	a, root, dir := startReexecAppliance(t)
	before := pids(t, a.Client)
	baton := a.cmd.Process.Pid
	// The fds are counted after a first re-exec: the first image also holds what it inherited
	// without close-on-exec from whatever started it (a shell's or job runner's fds, such as
	// /dev/null on 10 and a pipe on 251 under some CI runners), which baton marks
	// close-on-exec at start, so its first execve closes them. From then on a re-exec must
	// leave exactly as many.
	st, err := a.Client.Reexec("")
	if err == nil {
		_, err = a.Client.ReexecWait(st.ID, time.Minute)
	}
	if err != nil {
		t.Fatalf("first re-exec: %v", err)
	}
	baseline := fds(baton)

	r := ReexecPhase(a, "", 20, 16, 16)
	t.Logf("\n%s\npause: %+v", Table([]Result{r.Result}), r.PauseMs)
	if len(r.Errors) > 0 {
		t.Errorf("re-execs failed: %v", r.Errors)
	}
	if r.Requests < 100 || r.LongLines < 100 {
		t.Errorf("too little load to mean anything: %d requests, %d lines", r.Requests, r.LongLines)
	}
	if r.Failed != 0 || r.LongLost != 0 {
		t.Errorf("re-execs lost %d requests and %d long-lived connections: %v %v", r.Failed, r.LongLost, r.FailedWhy, r.LostWhy)
	}
	after := pids(t, a.Client)
	for name, st := range before {
		if got := after[name]; got.Pid != st.Pid || got.State != services.Running {
			t.Errorf("%s: pid %d %s after the re-execs, was %d %s", name, got.Pid, got.State, st.Pid, st.State)
		}
	}
	if v, err := a.Client.Version(); err != nil || v.Reexecs != 21 || v.Pid != baton {
		t.Errorf("version after 21 re-execs: %+v, %v (want 21 re-execs, pid %d)", v, err, baton)
	}
	if now := fds(baton); len(now) != len(baseline) {
		t.Errorf("baton has %d fds after 20 more re-execs, %d after the first:\nnow:    %v\nbefore: %v", len(now), len(baseline), now, baseline)
	}

	// A process that ends in the gap: the new binary waits a second before restoring.
	slow, err := BuildInitVariant(root, dir, "init-slow", "main.reexecFault=slow-restore")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		st, err := a.Client.Reexec(slow)
		if err == nil {
			_, err = a.Client.ReexecWait(st.ID, time.Minute)
		}
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(a.Output(), "reexec: executing the new binary") < 22 {
		if time.Now().After(deadline) {
			t.Fatal("the re-exec to the slow binary never reached its execve")
		}
		time.Sleep(5 * time.Millisecond) // a log line, polled
	}
	if err := syscall.Kill(before["victim"].Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("re-exec to the slow binary: %v", err)
	}
	svc := a.Client
	deadline = time.Now().Add(20 * time.Second)
	for {
		st, err := svc.Service("victim")
		if err == nil && st.State == services.Running && st.Pid != before["victim"].Pid && st.Restarts == 1 {
			if !strings.Contains(st.LastExit, "SIGKILL") {
				t.Errorf("victim's last exit %q, want killed by SIGKILL", st.LastExit)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("victim not restarted after it was killed in the gap: %+v %v", st, err)
		}
		time.Sleep(20 * time.Millisecond) // status, polled
	}
	after = pids(t, a.Client)
	for _, name := range []string{"web", "stream"} {
		if after[name].Pid != before[name].Pid {
			t.Errorf("%s: pid %d, was %d", name, after[name].Pid, before[name].Pid)
		}
	}
}

// TestReexecFailuresKeepServing: a binary that exits at once, one that fails its trial, one
// that reads another state version, and one that panics while restoring. Each initctl reexec
// exits 1 with the reason, the services keep their pids and keep serving, and the binary
// answering is the one from before.
func TestReexecFailuresKeepServing(t *testing.T) {
	a, root, dir := startReexecAppliance(t)
	before := pids(t, a.Client)
	v0, err := a.Client.Version()
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(a.Dir, "run", "control.sock")
	for _, c := range []struct{ fault, want string }{
		{"exit", "trial: the new binary exited with status 3"},
		{"trial", "built to fail its trial"},
		{"version", "unknown state version 1 (this binary reads version 99)"},
		{"panic-restore", "panic while restoring"},
	} {
		t.Run(c.fault, func(t *testing.T) {
			bin, err := BuildInitVariant(root, dir, "init-"+c.fault, "main.reexecFault="+c.fault)
			if err != nil {
				t.Fatal(err)
			}
			var out, errOut bytes.Buffer
			code := control.InitctlMain([]string{"--socket", sock, "reexec", "--binary", bin}, &out, &errOut)
			t.Logf("initctl reexec: exit %d\n%s%s", code, out.String(), errOut.String())
			if code != control.ExitFailed || !strings.Contains(errOut.String(), c.want) {
				t.Errorf("exit %d, stderr %q; want exit 1 naming %q", code, errOut.String(), c.want)
			}
			if err := get(httpClient(), "http://"+a.WebAddr+"/"); err != nil {
				t.Errorf("web does not answer after the failed re-exec: %v", err)
			}
			after := pids(t, a.Client)
			for name, st := range before {
				if after[name].Pid != st.Pid || after[name].State != services.Running {
					t.Errorf("%s: pid %d %s, was %d", name, after[name].Pid, after[name].State, st.Pid)
				}
			}
			v, err := a.Client.Version()
			if err != nil || v.Digest != v0.Digest || v.Pid != v0.Pid {
				t.Errorf("version after: %+v %v; want digest %s, pid %d", v, err, v0.Digest, v0.Pid)
			}
		})
	}
}
