package control

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/services"
)

var (
	fuzzOnce sync.Once
	fuzzSrv  *Server
)

// fuzzServer is the API over a supervisor of harmless processes (sleep), shared by every
// input: starting one per input would make the fuzzer measure fork, not the handler.
func fuzzServer(t testing.TB) *Server {
	fuzzOnce.Do(func() {
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		cfg, err := config.Parse("fuzz.toml", []byte(`
[[service]]
name = "a"
exec = ["/bin/sleep", "60"] # short: a fuzz worker killed by the fuzzer leaves nothing for long
stop_timeout = "1s"
[[service]]
name = "b"
exec = ["/bin/sh", "-c", "echo hi; exec sleep 60"]
requires = ["a"]
stop_timeout = "1s"
`))
		if err != nil {
			panic(err)
		}
		sv, err := services.New(cfg, services.Options{Log: log, Reaper: reaper, RunDir: t.TempDir()})
		if err != nil {
			panic(err)
		}
		sv.StartAll()
		fuzzSrv = &Server{SV: sv, Log: log}
	})
	return fuzzSrv
}

// FuzzHandler sends any method, path and body to every route: no input panics a handler (a
// recovered panic answers 500) or leaves a request unanswered. Power and kexec are not wired
// (nil: refused, as outside PID 1); an upgrade may only name /bin/sleep.
func FuzzHandler(f *testing.F) {
	for _, s := range []struct{ method, target, body string }{
		{"GET", "/v1/services", ""}, {"GET", "/v1/services/a", ""}, {"GET", "/v1/services/b/logs?n=1", ""},
		{"GET", "/v1/services/b/logs?follow=1&n=0", ""}, {"POST", "/v1/services/a/restart", ""},
		{"POST", "/v1/services/b/stop", ""}, {"POST", "/v1/services/b/start", ""},
		{"POST", "/v1/services/a/upgrade?exec=/bin/sleep", ""}, {"POST", "/v1/system/kexec", `{"kernel":"/k","cmdline":"x","append":"y"}`},
		{"POST", "/v1/system/reboot", ""}, {"GET", "/v1/boot", ""}, {"DELETE", "/v1/services/%00", "x"},
		{"GET", "/v1/services/a/logs?n=-1&follow=2", ""}, {"POST", "/v1/update/apply", "{}"}, {"POST", "/v1/reload-config", ""},
	} {
		f.Add(s.method, s.target, s.body)
	}
	f.Cleanup(func() {
		if fuzzSrv != nil {
			fuzzSrv.SV.StopAll()
			fuzzSrv.SV.Close()
		}
	})
	f.Fuzz(func(t *testing.T, method, target, body string) {
		u, err := url.Parse(target)
		if err != nil || !strings.HasPrefix(u.Path, "/") || u.Host != "" || u.Scheme != "" {
			return
		}
		if ex := u.Query()["exec"]; len(ex) > 0 && (len(ex) > 1 || ex[0] != "/bin/sleep") {
			return // an upgrade runs what it names: only the harmless one
		}
		if strings.Contains(strings.ToLower(u.Path), "update") || strings.Contains(u.Path, "reload") {
			return // not wired here (no updater, no config file)
		}
		req, err := http.NewRequest(method, "http://baton"+u.RequestURI(), strings.NewReader(body))
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond) // ends follow=1
		defer cancel()
		req = req.WithContext(ctx)
		w := httptest.NewRecorder()
		done := make(chan struct{})
		go func() { defer close(done); fuzzServer(t).Handler().ServeHTTP(w, req) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s %s: no answer in 30 s", method, target)
		}
		if w.Code == http.StatusInternalServerError {
			t.Errorf("%s %s %q: 500 %s", method, target, body, w.Body)
		}
	})
}
