package control

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/services"
)

const unitsConfig = `hostname = "t"

[[service]]
name = "db"
exec = ["/bin/sleep", "100"]

[[service]]
name = "web"
exec = ["/bin/sh", "-c", "while :; do sleep 0.05; done"]
requires = ["db"]
reload_signal = "SIGWINCH"  # ignored by default: no race with the shell's start
stop_timeout = "3s"
  [[service.socket]]
  listen = "tcp://127.0.0.1:0"

[[service]]
name = "broken"
exec = ["/bin/false"]
restart = "never"
after = ["web"]
wants = ["db"]
`

// serveUnits runs the API over unitsConfig, written to a file as baton reads it.
func serveUnits(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "baton.toml")
	os.WriteFile(path, []byte(unitsConfig), 0o644)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sv, err := services.New(cfg, services.Options{Log: log, Reaper: reaper, RunDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	sv.StartAll()
	// "broken" is running once exec'd; its exit follows.
	sv.Service("broken").WaitUntil(func(st services.Status) bool { return st.State == services.Failed }, 5*time.Second)
	srv := &Server{SV: sv, Log: log, ConfigFile: path}
	sock := filepath.Join(dir, "control.sock")
	l, err := ListenLocal(sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeLocal(l)
	t.Cleanup(func() { l.Close(); sv.StopAll(); sv.Close() })
	return sock
}

func initctlRun(sock string, args ...string) (string, int) {
	var out, errOut bytes.Buffer
	code := InitctlMain(append([]string{"--socket", sock}, args...), &out, &errOut)
	return out.String() + errOut.String(), code
}

func TestInitctlSystemctlCommands(t *testing.T) {
	sock := serveUnits(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"is-active", "web"}, 0, "active\n"},
		{[]string{"is-active", "broken"}, 3, "failed\n"},
		{[]string{"is-active", "nosuch"}, 3, "inactive\n"},
		{[]string{"is-active", "-q", "broken", "web"}, 0, ""},
		{[]string{"is-failed", "broken"}, 0, "failed\n"},
		{[]string{"is-failed", "web"}, 1, "active\n"},
		{[]string{"show", "web", "-p", "stop_timeout,type,restart,requires"}, 0, "restart=on-failure\ntype=simple\nrequires=[\"db\"]\nstop_timeout=3s\n"},
		{[]string{"cat", "web"}, 0, "[[service]]\nname = \"web\""},
		{[]string{"list-dependencies", "broken"}, 0, "broken\n├─db (wants)\n└─web (after)\n  └─db (requires)\n"},
		{[]string{"reload", "web"}, 0, "web: running"},
		{[]string{"reload", "broken"}, 1, "not running"},
		{[]string{"kill", "web", "--signal", "SIGNOPE"}, 1, "not a signal name"},
		{[]string{"kill", "nosuch"}, 3, "unknown service"},
	} {
		out, code := initctlRun(sock, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("initctl %s: exit %d %q; want exit %d with %q", strings.Join(tc.args, " "), code, out, tc.code, tc.want)
		}
	}
	out, _ := initctlRun(sock, "cat", "web")
	if !strings.Contains(out, "[[service.socket]]") || strings.Contains(out, "broken") {
		t.Errorf("cat web: %q; want its block with its socket, and nothing after", out)
	}
	out, code := initctlRun(sock, "show", "web", "--json")
	var m map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &m) != nil || m["stop_signal"] != "SIGTERM" || m["socket"] == nil {
		t.Errorf("show --json: exit %d %q", code, out)
	}
	if out, code := initctlRun(sock, "kill", "web", "--main", "--signal", "WINCH"); code != 0 {
		t.Errorf("kill --main: %d %s", code, out)
	}
	if out, code := initctlRun(sock, "kill", "web", "--signal", "SIGKILL"); code != 0 {
		t.Errorf("kill: %d %s", code, out)
	}
}

func TestMetricsInPrometheusTextFormat(t *testing.T) {
	sock := serveUnits(t)
	resp, err := NewLocal(sock).hc.Get("http://baton/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	body := string(b)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("content type %q", ct)
	}
	for _, want := range []string{
		`baton_service_state{service="web",state="running"} 1`,
		`baton_service_state{service="web",state="failed"} 0`,
		`baton_service_state{service="broken",state="failed"} 1`,
		"# TYPE baton_service_restarts_total counter",
		`baton_service_restarts_total{service="db"} 0`,
		`baton_service_fdstore_max{service="web"} 0`,
		`baton_service_notify_dropped_total{service="web"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("no line %q in:\n%s", want, body)
		}
	}
	if strings.Contains(body, `baton_service_uptime_seconds{service="broken"}`) {
		t.Errorf("uptime for a service that does not run")
	}
	// Every sample line: name{labels} value.
	for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
		if !strings.HasPrefix(l, "#") && !regexp.MustCompile(`^baton_[a-z_]+\{[^}]*\} [0-9.e+-]+$`).MatchString(l) {
			t.Errorf("not a sample line: %q", l)
		}
	}
}
