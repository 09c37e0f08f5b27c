package control

import (
	"bufio"
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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/services"
)

// remote serves a supervisor of one sleep over TCP with mutual TLS and the given limits.
func remote(t *testing.T, lim RemoteLimits) (addr, tlsDir string, log *logBuffer) {
	t.Helper()
	tlsDir = t.TempDir()
	if err := GenerateTLS(tlsDir, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	log = &logBuffer{}
	lg := slog.New(slog.NewTextHandler(log, nil))
	cfg, _ := config.Parse("t.toml", []byte("[[service]]\nname = \"a\"\nexec = [\"/bin/sleep\", \"100\"]\n"))
	sv, err := services.New(cfg, services.Options{Log: lg, Reaper: reaper, RunDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	sv.StartAll()
	l, err := (&Server{SV: sv, Log: lg, Remote: lim}).ServeRemote("127.0.0.1:0", tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); sv.StopAll(); sv.Close() })
	return l.Addr().String(), tlsDir, log
}

type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// closedWithin reports whether the server closes c (EOF or reset) within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func TestRemoteHandshakeCapAndDeadline(t *testing.T) {
	addr, dir, log := remote(t, RemoteLimits{MaxHandshakes: 4, MaxConnections: 6, HandshakeTimeout: 500 * time.Millisecond})
	var silent []net.Conn
	for i := 0; i < 10; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	// The connections past the cap are closed at once; the first four wait for their
	// handshake deadline. Accept order is dial order on loopback.
	closed := 0
	for _, c := range silent[4:] {
		if closedWithin(c, 2*time.Second) {
			closed++
		}
	}
	if closed != 6 {
		t.Errorf("%d of the 6 connections beyond max_handshakes were closed, want 6", closed)
	}
	start := time.Now()
	for i, c := range silent[:4] {
		if !closedWithin(c, 5*time.Second) {
			t.Errorf("silent connection %d still open 5 s after the 500 ms handshake deadline", i)
		}
	}
	t.Logf("handshaking connections dropped %v after the refusals", time.Since(start))
	// Slots come back: a client with a certificate is served again.
	c, err := NewRemote(addr, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Services(); err != nil {
		t.Errorf("after the silent connections are gone: %v", err)
	}
	if n := strings.Count(log.String(), "connection refused"); n != 1 {
		t.Errorf("%d refusal warnings for 6 refusals, want 1 (rate-limited):\n%s", n, log)
	}
}

func TestRemoteMaxConnections(t *testing.T) {
	addr, dir, _ := remote(t, RemoteLimits{MaxHandshakes: 8, MaxConnections: 2})
	cfg, _ := ClientTLS(dir)
	var held []*tls.Conn
	for i := 0; i < 2; i++ {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// The third connection gets no handshake: it is closed.
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err == nil {
		// TLS 1.3: the client may finish before the server's side; the server's close shows
		// on the first read.
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	// Closed: an EOF, or a reset when the server's close found the ClientHello unread.
	if err == nil || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		t.Errorf("third connection with max_connections = 2: %v, want it closed (EOF or reset)", err)
	}
	held[0].Close()
	hc, _ := NewRemote(addr, dir)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := hc.Services(); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("a slot freed by a closed connection is not reused: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // the server sees the close asynchronously
	}
}

func TestRemoteEntropyNotReady(t *testing.T) {
	entropyReady = func() bool { return false }
	addr, dir, log := remote(t, RemoteLimits{})
	entropyReady = getrandomReady
	c, _ := NewRemote(addr, dir)
	done := make(chan error, 1)
	go func() { _, err := c.Services(); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "entropy not ready") {
			t.Errorf("err = %v, want it to say entropy not ready", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request hangs while entropy is not ready")
	}
	// The server logs after it has sent the alert the client just read: wait for the line.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(log.String(), "entropy not ready"); {
		if time.Now().After(deadline) {
			t.Fatalf("server log does not say entropy not ready:\n%s", log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLogsOfServiceWithoutOutputIsEmptyList(t *testing.T) {
	_, sock := serve(t)
	resp, err := NewLocal(sock).hc.Get("http://baton/v1/services/idle/logs?n=5")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if got := strings.TrimSpace(string(body)); got != "[]" {
		t.Errorf("logs of a service with no output = %s, want []", got)
	}
}

func TestFollowStreamsAreCapped(t *testing.T) {
	c, _ := serve(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	started := make(chan struct{}, DefaultMaxFollows)
	for i := 0; i < DefaultMaxFollows; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			once := sync.Once{}
			_ = c.FollowLogs(ctx, "echo", 1, func(services.LogLine) { once.Do(func() { started <- struct{}{} }) })
		}()
	}
	for i := 0; i < DefaultMaxFollows; i++ {
		select {
		case <-started:
		case <-time.After(20 * time.Second):
			t.Fatalf("only %d of %d follow streams started", i, DefaultMaxFollows)
		}
	}
	err := c.FollowLogs(ctx, "echo", 1, func(services.LogLine) {})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != http.StatusServiceUnavailable {
		t.Errorf("follow stream %d: %v, want 503", DefaultMaxFollows+1, err)
	}
	if _, err := c.Services(); err != nil {
		t.Errorf("the API does not answer beside %d streams: %v", DefaultMaxFollows, err)
	}
}

// A body that stops coming is cut off after BodyIdle without progress; one that trickles
// faster than that is read to its end, however long it takes.
func TestPostBodyDeadlineResetsOnProgress(t *testing.T) {
	_, sock := serve(t)
	_ = sock
	srvSock := t.TempDir() + "/c.sock"
	l, err := ListenLocal(srvSock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// BodyIdle is 20 times the trickle's gap between bytes: on a loaded machine a sleep of
	// 50 ms can take a few hundred (at 300 ms and 100 ms gaps, stress -c 2 cut a moving body).
	srv := &Server{SV: nil, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), BodyIdle: time.Second}
	go srv.ServeLocal(l)
	post := func(body string, gap time.Duration, stopAfter int) (string, time.Duration) {
		c, err := net.Dial("unix", srvSock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		fmt.Fprintf(c, "POST /v1/system/kexec HTTP/1.1\r\nHost: baton\r\nContent-Length: %d\r\n\r\n", len(body))
		for i := 0; i < len(body) && i < stopAfter; i++ {
			c.Write([]byte{body[i]})
			time.Sleep(gap)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line), time.Since(start)
	}
	body := `{"kernel": "/boot/vmlinuz"}` + strings.Repeat(" ", 73)
	// Stalls after 3 bytes: answered (400, the body is cut) or closed soon after 1 s.
	status, took := post(body, 10*time.Millisecond, 3)
	if took > 5*time.Second {
		t.Errorf("stalled body held the connection %v (%q)", took, status)
	}
	// Trickles one byte per 50 ms (5 s in all, five times BodyIdle): read whole. The server
	// has no Kexec here, so the decoded request gets 409 "not PID 1".
	status, took = post(body, 50*time.Millisecond, len(body))
	if !strings.Contains(status, "409") {
		t.Errorf("slow but moving body: %q after %v, want 409 (read whole)", status, took)
	}
}

// Concurrent restarts: every answer is about the service it was asked for.
func TestConcurrentRestartsAnswerForTheirService(t *testing.T) {
	c, _ := serve(t)
	var wg sync.WaitGroup
	errs := make(chan string, 40)
	for i := 0; i < 20; i++ {
		for _, name := range []string{"echo", "idle"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := c.Action(name, "restart")
				if err != nil {
					return // a restart refused while another runs is fine; a wrong name is not
				}
				if r.Service != name || (r.Status != nil && r.Status.Name != name) {
					errs <- fmt.Sprintf("restart %s answered service %q status %q", name, r.Service, r.Status.Name)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// initctl status shows a service's STATUS= and errors with their control characters escaped,
// whatever the server sent.
func TestInitctlStatusEscapesControlCharacters(t *testing.T) {
	hostile := "\x1b[2J\x1b]0;owned\x07"
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := services.Status{Name: "a", State: services.Running, Status: hostile, Error: hostile}
		if r.URL.Path == "/v1/services" {
			writeJSON(w, http.StatusOK, ServiceList{Services: []services.Status{st}})
			return
		}
		writeJSON(w, http.StatusOK, st)
	}))
	defer ts.Close()
	for _, args := range [][]string{{"status"}, {"status", "a"}} {
		var out bytes.Buffer
		ic := &initctl{c: &Client{hc: ts.Client(), base: ts.URL, target: ts.URL}, out: &out, err: io.Discard}
		if err := ic.status(args[1:]); err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(out.String(), "\x1b\x07") || !strings.Contains(out.String(), `\x1b[2J\x1b]0;owned\x07`) {
			t.Errorf("initctl %v printed %q", args, out.String())
		}
	}
}
