package vm

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// While its requests fail, a paced poller starts them PaceWhileDown apart; while they are
// answered it keeps its own interval.
func TestPollerPacesWhileDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String() + "/"
	l.Close() // connections are refused: each request fails at once

	p := Poll(closed, PollOptions{Timeout: time.Second, Every: 5 * time.Millisecond, PaceWhileDown: 50 * time.Millisecond})
	time.Sleep(600 * time.Millisecond)
	down := p.End()
	// Unpaced, 600 ms at 5 ms intervals would be about 120 requests; paced, at most 13.
	if n := len(down.Failed); n < 3 || n > 15 {
		t.Errorf("%d requests failed in 600 ms paced 50 ms apart", n)
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	up := Poll(srv.URL+"/", PollOptions{Timeout: time.Second, Every: 5 * time.Millisecond, PaceWhileDown: 50 * time.Millisecond})
	time.Sleep(600 * time.Millisecond)
	if r := up.End(); r.Answers < 30 {
		t.Errorf("%d answers in 600 ms at 5 ms intervals: paced while up", r.Answers)
	}
}

// A request from the outage that fails after later ones were answered does not pace the
// poller again: down follows the latest-started request that ended.
func TestPollerDownFollowsTheLatestRequest(t *testing.T) {
	release, first := make(chan struct{}), make(chan bool, 1)
	first <- true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-first:
			<-release // the slow one, from the outage
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
		}
	}))
	defer srv.Close()
	p := Poll(srv.URL+"/", PollOptions{Timeout: 10 * time.Second, Every: 5 * time.Millisecond, PaceWhileDown: 50 * time.Millisecond})
	defer p.End()
	p.WaitAnswers(t, 3, 10*time.Second)
	close(release)
	for p.Failures.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	p.mu.Lock()
	down := p.down
	p.mu.Unlock()
	if down {
		t.Error("a slow failure of a request older than the answered ones set the poller down")
	}
}
