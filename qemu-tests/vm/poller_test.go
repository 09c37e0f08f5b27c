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
