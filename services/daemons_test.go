package services

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/system"
)

// Unmodified Debian daemons as a unit-file author runs them, on the host in subreaper mode
// (make unit installs them through the Makefile's daemons target, without starting them).

// nginxConf is Debian's nginx in its default mode (it forks and writes a pid file) on a
// loopback port, with every path it writes in dir.
func nginxConf(t *testing.T, dir string, port int) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "www"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The workers run as nobody: the test's temporary directories must let them in.
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	os.WriteFile(filepath.Join(dir, "www", "index.html"), []byte("hello from nginx\n"), 0o644)
	conf := fmt.Sprintf(`pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
worker_processes 2;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path %[1]s/body; proxy_temp_path %[1]s/proxy; fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi; scgi_temp_path %[1]s/scgi;
	server { listen 127.0.0.1:%[2]d; root %[1]s/www; }
}
`, dir, port)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func needDaemon(t *testing.T, path string) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root (the daemon's master runs as root and its workers as nobody)")
	}
	if _, err := os.Stat(path); err != nil {
		requireOrSkip(t, path+" not installed (make daemons installs it)")
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := system.ReadProcStat(n); err == nil && st.PPid == pid && st.State != 'Z' {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// processesWith lists the live processes whose command line contains s.
func processesWith(s string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(b), s) && alive(n) {
			out = append(out, n)
		}
	}
	return out
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// waitFor polls cond: the test watches another program's processes, which tell it nothing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNginxForkingReloadStop(t *testing.T) {
	needDaemon(t, "/usr/sbin/nginx")
	dir, port := t.TempDir(), freePort(t)
	conf := nginxConf(t, dir, port)
	pidFile := filepath.Join(dir, "nginx.pid")
	sv := supervisor(t, config.Service{Name: "nginx", Type: config.TypeForking, PIDFile: pidFile,
		Exec: []string{"/usr/sbin/nginx", "-c", conf, "-e", filepath.Join(dir, "error.log")}})
	t.Cleanup(func() { // never leave a daemon behind, whatever failed
		for _, p := range processesWith(conf) {
			killPid(p)
		}
	})
	if rep := sv.StartAll(); rep[0].Err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		t.Fatalf("start: %v\n%s", rep[0].Err, b)
	}
	st := sv.Status("nginx")
	b, _ := os.ReadFile(pidFile)
	master, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if st.State != Running || st.Pid != master {
		t.Fatalf("status %s pid %d; want running with the master's pid %d", st.State, st.Pid, master)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if body := get(t, url); body != "hello from nginx\n" {
		t.Fatalf("GET: %q", body)
	}
	var workers []int
	waitFor(t, "2 workers", func() bool { workers = childrenOf(master); return len(workers) == 2 })
	for i := range 2 {
		if err := sv.ReloadService("nginx"); err != nil {
			t.Fatalf("reload %d: %v", i+1, err)
		}
		old := workers
		// SIGHUP: the master starts new workers and lets the old ones finish.
		waitFor(t, "new workers", func() bool {
			workers = childrenOf(master)
			return len(workers) == 2 && !slices.ContainsFunc(workers, func(p int) bool { return slices.Contains(old, p) })
		})
		if st := sv.Status("nginx"); st.Pid != master || st.State != Running {
			t.Fatalf("after reload %d: %s pid %d; want running, master %d", i+1, st.State, st.Pid, master)
		}
		if body := get(t, url); body != "hello from nginx\n" {
			t.Fatalf("GET after reload: %q", body)
		}
	}
	if killed, err := sv.Stop("nginx"); err != nil || len(killed) > 0 {
		t.Fatalf("stop: %v (killed %v)", err, killed)
	}
	waitGone(t, master)
	for _, w := range workers {
		waitGone(t, w)
	}
	if left := processesWith(conf); len(left) > 0 {
		t.Fatalf("nginx processes left after stop: %v", left)
	}
	if st := sv.Status("nginx"); st.State != Stopped {
		t.Errorf("state %s after stop", st.State)
	}
}

// Debian's nginx calls setsid after it wrote its pid file: the process group its master had
// when adopted is gone by the time its workers are forked. A master killed right after start
// must not leave them behind.
func TestNginxMasterKilledLeavesNoWorker(t *testing.T) {
	needDaemon(t, "/usr/sbin/nginx")
	for range 5 {
		dir, port := t.TempDir(), freePort(t)
		conf := nginxConf(t, dir, port)
		sv := supervisor(t, config.Service{Name: "nginx", Type: config.TypeForking, PIDFile: filepath.Join(dir, "nginx.pid"),
			Exec: []string{"/usr/sbin/nginx", "-c", conf, "-e", filepath.Join(dir, "error.log")}})
		if rep := sv.StartAll(); rep[0].Err != nil {
			t.Fatal(rep[0].Err)
		}
		master := sv.Status("nginx").Pid
		killPid(master)
		waitGone(t, master)
		sv.StopAll()
		waitFor(t, "no nginx worker left", func() bool { return len(processesWith("nginx: worker")) == 0 })
	}
}
