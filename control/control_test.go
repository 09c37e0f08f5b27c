package control

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/handoff/execshim"
	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/system"
)

var reaper *system.Reaper

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "baton-exec" { // the test binary doubles as the exec shim
		os.Exit(execshim.Main(os.Args[1:]))
	}
	// As a helper (re-executed as another user): one GET on the socket, print the status code.
	if sock := os.Getenv("BATON_TEST_GET"); sock != "" {
		resp, err := NewLocal(sock).hc.Get("http://baton/v1/services")
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		body, _ := io.ReadAll(resp.Body)
		fmt.Printf("%d %s", resp.StatusCode, body)
		os.Exit(0)
	}
	// As baton does: the services started here must not inherit what the test binary was
	// started with ignored (SIGHUP under nohup, SIGINT in a script's background job).
	system.ResetIgnoredSignals()
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	reaper = system.NewReaper(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}

// serve starts a supervisor with two services and the API on a temporary socket.
func serve(t *testing.T) (*Client, string) {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Parse("test.toml", []byte(`
[[service]]
name = "echo"
exec = ["/bin/sh", "-c", "echo hello; echo world >&2; exec sleep 100"]
[[service]]
name = "idle"
exec = ["/bin/sleep", "100"]
after = ["echo"]
`))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sv, err := services.New(cfg, services.Options{Log: log, Reaper: reaper, RunDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	sv.StartAll()
	srv := &Server{SV: sv, Log: log, Timeline: func() Timeline { return Timeline{Services: []TimelineEntry{{Name: "echo"}}} }}
	sock := filepath.Join(dir, "control.sock")
	l, err := ListenLocal(sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeLocal(l)
	t.Cleanup(func() { l.Close(); sv.StopAll(); sv.Close() })
	return NewLocal(sock), sock
}

func TestLocalSocketIsPrivate(t *testing.T) {
	_, sock := serve(t)
	st, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v, want 0600", st.Mode().Perm())
	}
}

func TestAPI(t *testing.T) {
	c, _ := serve(t)
	list, err := c.Services()
	if err != nil || len(list) != 2 || list[0].Name != "echo" || list[0].State != services.Running || list[0].Pid == 0 {
		t.Fatalf("Services() = %+v, %v", list, err)
	}
	before := list[0].Pid
	r, err := c.Action("echo", "restart")
	if err != nil || r.Status.State != services.Running || r.Status.Pid == before {
		t.Fatalf("restart = %+v, %v; want running with a new pid", r, err)
	}
	lines, err := c.Logs("echo", 0)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, l := range lines {
		texts = append(texts, l.Text)
	}
	if !strings.Contains(strings.Join(texts, ","), "hello") {
		t.Errorf("logs %v lack the service's output", texts)
	}
	if r, err := c.Action("idle", "stop"); err != nil || r.Status.State != services.Stopped {
		t.Errorf("stop = %+v, %v", r, err)
	}
	if tl, err := c.Timeline(); err != nil || len(tl.Services) != 1 {
		t.Errorf("timeline = %+v, %v", tl, err)
	}
}

func TestFollowLogs(t *testing.T) {
	c, _ := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	err := c.FollowLogs(ctx, "echo", 0, func(l services.LogLine) {
		got = append(got, l.Text)
		if len(got) == 2 {
			// After the old lines, a restart writes new ones; follow must deliver them.
			go c.Action("echo", "restart")
		}
		if len(got) == 4 {
			cancel()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Errorf("followed %v, want 2 old and 2 new lines", got)
	}
}

func TestAPIErrors(t *testing.T) {
	c, sock := serve(t)
	for _, tc := range []struct {
		method, path string
		code         int
		msg          string
	}{
		{"GET", "/v1/services/nope", 404, `unknown service "nope"`},
		{"POST", "/v1/services/nope/start", 404, `unknown service "nope"`},
		{"POST", "/v1/services/echo/explode", 404, `unknown action "explode"`},
		{"GET", "/v1/services/echo/logs?n=many", 400, `n="many"`},
		{"GET", "/v1/services/echo/logs?follow=yes", 400, `follow="yes"`},
		{"POST", "/v1/system/selfdestruct", 404, `unknown system action`},
		{"POST", "/v1/system/reboot", 409, "not PID 1"},
		{"GET", "/v2/whatever", 404, "no route GET /v2/whatever"},
		{"GET", "/v1/services/echo/start", 404, "no route"},
	} {
		resp, err := c.request(context.Background(), tc.method, tc.path, nil)
		var ae *APIError
		if err == nil {
			resp.Body.Close()
		}
		if !errors.As(err, &ae) || ae.Code != tc.code || !strings.Contains(ae.Msg, tc.msg) {
			t.Errorf("%s %s: %v, want %d with %q", tc.method, tc.path, err, tc.code, tc.msg)
		}
	}
	// A method no route takes is a 404 naming method and path.
	resp, err := NewLocal(sock).hc.Post("http://baton/v1/services", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "no route POST /v1/services") {
		t.Errorf("POST /v1/services: %s %s", resp.Status, body)
	}
}

func TestRejectsNonRootPeer(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	_, sock := serve(t)
	// Let anyone connect, so that SO_PEERCRED, not the file mode, is what refuses.
	os.Chmod(sock, 0o666)
	os.Chmod(filepath.Dir(sock), 0o755)
	// The test binary lives in a directory only root may enter: copy it where nobody can run it.
	exe, _ := os.Executable()
	bin := filepath.Join(t.TempDir(), "client")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin, data, 0o755)
	for d := filepath.Dir(bin); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "BATON_TEST_GET="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as nobody: %v: %s", err, out)
	}
	if !bytes.HasPrefix(out, []byte("403 ")) || !bytes.Contains(out, []byte("uid 65534 is not root")) {
		t.Errorf("nobody got %q, want 403 naming the uid", out)
	}
}

func TestRemoteMutualTLS(t *testing.T) {
	_, _ = serve(t)
	dir := t.TempDir()
	if err := GenerateTLS(dir, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg, _ := config.Parse("t.toml", []byte("[[service]]\nname = \"a\"\nexec = [\"/bin/sleep\", \"100\"]\n"))
	sv, _ := services.New(cfg, services.Options{Log: log, Reaper: reaper})
	sv.StartAll()
	defer sv.StopAll()
	l, err := (&Server{SV: sv, Log: log}).ServeRemote("127.0.0.1:0", dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()

	c, err := NewRemote(addr, dir)
	if err != nil {
		t.Fatal(err)
	}
	if list, err := c.Services(); err != nil || len(list) != 1 {
		t.Fatalf("with a client certificate: %+v, %v", list, err)
	}
	// Without a client certificate, or with one from another CA, the server refuses the
	// handshake with the TLS alert that says why.
	other := t.TempDir()
	GenerateTLS(other, []string{"127.0.0.1"})
	otherCfg, _ := ClientTLS(other)
	ours, _ := ClientTLS(dir)
	for _, tc := range []struct {
		name  string
		cfg   *tls.Config
		alert string
	}{
		{"no certificate", &tls.Config{RootCAs: ours.RootCAs, MinVersion: tls.VersionTLS13}, "remote error: tls: certificate required"},
		{"certificate of another CA", &tls.Config{RootCAs: ours.RootCAs, Certificates: otherCfg.Certificates, MinVersion: tls.VersionTLS13},
			"remote error: tls: unknown certificate authority"},
	} {
		if err := tlsRefusal(addr, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.alert) {
			t.Errorf("%s: %v, want the server's alert %q", tc.name, err, tc.alert)
		}
	}
}

// tlsRefusal connects and reads, and returns what ended that. Under TLS 1.3 the client's side
// of the handshake ends before the server has checked the client's certificate, so a refusal
// is the alert read next; nothing is written, so no reset can overtake the alert. A server
// that accepted would send nothing, and the read would end in a timeout.
func tlsRefusal(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 1))
	return err
}

func TestInitctl(t *testing.T) {
	_, sock := serve(t)
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := InitctlMain(append([]string{"--socket", sock}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	for _, tc := range []struct {
		args   []string
		code   int
		outHas string
		errHas string
	}{
		{[]string{"status"}, ExitOK, "echo", ""},
		{[]string{"status", "idle", "--json"}, ExitOK, `"name": "idle"`, ""},
		{[]string{"status", "nope"}, ExitUnknown, "", `unknown service "nope"`},
		{[]string{"restart", "echo"}, ExitOK, "echo: running in", ""},
		{[]string{"stop", "idle"}, ExitOK, "idle: stopped", ""},
		{[]string{"logs"}, ExitOK, "echo: hello", ""}, // every service, merged by time
		{[]string{"logs", "-f"}, ExitUsage, "", "exactly one service"},
		{[]string{"analyze"}, ExitOK, "service echo", ""},
		{[]string{"poweroff"}, ExitFailed, "", "not PID 1"},
		{[]string{"frobnicate"}, ExitUsage, "", `unknown command "frobnicate"`},
		{[]string{}, ExitUsage, "", "usage: initctl"},
	} {
		code, out, errs := run(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.outHas) || !strings.Contains(errs, tc.errHas) {
			t.Errorf("initctl %v = %d\nstdout: %s\nstderr: %s\nwant %d, stdout with %q, stderr with %q", tc.args, code, out, errs, tc.code, tc.outHas, tc.errHas)
		}
	}
	// logs -n 1 prints exactly the last line of the log. echo may still be writing (the restart
	// above): compare with the whole log read before and after, and try again if it grew.
	c := NewLocal(sock)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		before, _ := c.Logs("echo", 0)
		code, out, errs := run("logs", "-n", "1", "echo")
		after, err := c.Logs("echo", 0)
		if err != nil || len(after) < 2 || len(after) != len(before) {
			if time.Now().After(deadline) {
				t.Fatalf("echo's log never settled with its lines in: %+v (%v)", after, err)
			}
			continue
		}
		last := after[len(after)-1]
		want := last.Time.Format("15:04:05.000") + " " + last.Text + "\n"
		if code != ExitOK || out != want || errs != "" {
			t.Errorf("initctl logs -n 1 echo = %d\nstdout: %q\nstderr: %q\nwant 0 and stdout %q (the last of %d lines)", code, out, errs, want, len(after))
		}
		break
	}

	var out, errb bytes.Buffer
	missing := filepath.Join(t.TempDir(), "none.sock")
	if code := InitctlMain([]string{"--socket", missing, "status"}, &out, &errb); code != ExitUnreachable || !strings.Contains(errb.String(), missing) {
		t.Errorf("unreachable socket: %d %q, want %d naming the path", code, errb.String(), ExitUnreachable)
	}
	t.Setenv("BATON_SOCKET", sock)
	if code := InitctlMain([]string{"status"}, &out, &errb); code != ExitOK {
		t.Errorf("BATON_SOCKET not used: %d %s", code, errb.String())
	}
}

// A panic in a handler is answered (500) and logged with its stack, and the API still serves.
func TestHandlerPanicIsContained(t *testing.T) {
	var logBuf bytes.Buffer
	srv := &Server{Log: slog.New(slog.NewTextHandler(&logBuf, nil)), Timeline: func() Timeline { panic("injected: timeline") }}
	h := srv.Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/boot", nil))
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "injected: timeline") {
		t.Errorf("answer %d %q, want 500 naming the panic", rec.Code, rec.Body.String())
	}
	if out := logBuf.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "TestHandlerPanicIsContained") {
		t.Errorf("panic not logged at error level with its stack:\n%s", out)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/nowhere", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("after the panic: %d, want 404", rec.Code)
	}
}
