package services

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-init/baton/config"
)

// gunicorn (Debian's, sync workers) with kill_mode = "mixed": the stop signal reaches only
// the master, which lets its workers finish the requests they hold; a request in flight
// during initctl stop is answered in full.
func TestGunicornMixedStopFinishesRequest(t *testing.T) {
	needDaemon(t, "/usr/bin/gunicorn")
	dir, port := t.TempDir(), freePort(t)
	started := filepath.Join(dir, "started")
	os.WriteFile(filepath.Join(dir, "app.py"), []byte(fmt.Sprintf(`import time
def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        open(%q, "w").close()  # the test stops gunicorn now
        time.sleep(1.5)
        body = b"slow done\n"
    else:
        body = b"hello from gunicorn\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
`, started)), 0o644)
	sv := supervisor(t, config.Service{Name: "gunicorn", KillMode: config.KillMixed, StopTimeout: dur(20 * time.Second),
		Exec: []string{"/usr/bin/gunicorn", "--chdir", dir, "--workers", "2", "--graceful-timeout", "15",
			"--bind", fmt.Sprintf("127.0.0.1:%d", port), "app:app"}})
	t.Cleanup(func() {
		for _, p := range processesWith("app:app") {
			killPid(p)
		}
	})
	if rep := sv.StartAll(); rep[0].Err != nil {
		t.Fatal(rep[0].Err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitFor(t, "gunicorn answering", func() bool {
		resp, err := http.Get(base + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	type result struct {
		body string
		err  error
	}
	slow := make(chan result, 1)
	go func() {
		resp, err := http.Get(base + "/slow")
		if err != nil {
			slow <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		slow <- result{string(b), err}
	}()
	waitFor(t, "the slow request to reach a worker", func() bool { _, err := os.Stat(started); return err == nil })
	killed, err := sv.Stop("gunicorn")
	if err != nil || len(killed) > 0 {
		t.Fatalf("stop: %v (killed %v)", err, killed)
	}
	if r := <-slow; r.err != nil || r.body != "slow done\n" {
		t.Errorf("request in flight during the stop: %q, %v; want it answered in full", r.body, r.err)
	}
	if left := processesWith("app:app"); len(left) > 0 {
		t.Errorf("gunicorn processes left after stop: %v", left)
	}
	if st := sv.Status("gunicorn"); st.State != Stopped {
		t.Errorf("state %s after stop; want stopped", st.State)
	}
}

// lighttpd on a held socket (server.systemd-socket-activation) with stop_signal = "SIGINT",
// its graceful stop, and success_exit_status = [1] as a unit file for it has: a download in
// progress during initctl stop completes, and the stop ends stopped, not failed.
func TestLighttpdGracefulStop(t *testing.T) {
	needDaemon(t, "/usr/sbin/lighttpd")
	dir, port := t.TempDir(), freePort(t)
	www := filepath.Join(dir, "www")
	os.MkdirAll(www, 0o755)
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 2<<20) // 32 MiB: read slowly, it outlasts the stop
	os.WriteFile(filepath.Join(www, "big"), big, 0o644)
	conf := filepath.Join(dir, "lighttpd.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`server.document-root = %q
server.systemd-socket-activation = "enable"
server.errorlog = %q
`, www, filepath.Join(dir, "error.log"))), 0o644)
	sv := supervisor(t, config.Service{Name: "lighttpd", StopSignal: "SIGINT", SuccessExitStatus: []int{1},
		StopTimeout: dur(20 * time.Second), Exec: []string{"/usr/sbin/lighttpd", "-D", "-f", conf},
		Socket: []config.Socket{{Name: "http", Listen: fmt.Sprintf("tcp://127.0.0.1:%d", port), Backlog: 16, Mode: "0666"}}})
	t.Cleanup(func() {
		for _, p := range processesWith(conf) {
			killPid(p)
		}
	})
	if rep := sv.StartAll(); rep[0].Err != nil {
		t.Fatal(rep[0].Err)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/big", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, 1<<20)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("first MiB: %v", err)
	}
	stopped := make(chan error, 1)
	go func() {
		killed, err := sv.Stop("lighttpd")
		if err == nil && len(killed) > 0 {
			err = fmt.Errorf("killed after stop_timeout: %v", killed)
		}
		stopped <- err
	}()
	// The stop is under way while the rest is read: lighttpd stops accepting and finishes it.
	if !sv.Service("lighttpd").WaitUntil(func(st Status) bool { return st.State == Stopping }, 5*time.Second) {
		t.Fatalf("state %s; want stopping", sv.Status("lighttpd").State)
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil || len(first)+len(rest) != len(big) {
		t.Errorf("download during the stop: %d of %d bytes, %v; want all of it", len(first)+len(rest), len(big), err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("stop: %v", err)
	}
	st := sv.Status("lighttpd")
	if st.State != Stopped || !strings.HasPrefix(st.LastExit, "exited with status") {
		t.Errorf("after stop: %s, last exit %q; want stopped after an exit of its own", st.State, st.LastExit)
	}
	if left := processesWith(conf); len(left) > 0 {
		t.Errorf("lighttpd left after stop: %v", left)
	}
}
