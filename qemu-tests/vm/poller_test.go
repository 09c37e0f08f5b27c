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
	if n := len(down.Failed); n < 3 || n > 15 {
		t.Errorf("%d requests failed in 600 ms paced 50 ms apart", n)
	}
	for i := 1; i < len(down.Failed); i++ {
		if gap := down.Failed[i].At.Sub(down.Failed[i-1].At); gap < 25*time.Millisecond {
			t.Errorf("requests %d and %d started %v apart while down", i-1, i, gap)
		}
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	up := Poll(srv.URL+"/", PollOptions{Timeout: time.Second, Every: 5 * time.Millisecond, PaceWhileDown: 50 * time.Millisecond})
	time.Sleep(600 * time.Millisecond)
	if r := up.End(); r.Answers < 30 {
		t.Errorf("%d answers in 600 ms at 5 ms intervals: paced while up", r.Answers)
	}
}
