package handoffbench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Load keeps HTTP requests (a new connection each) and long-lived stream connections going.
type Load struct {
	Workers   int
	LongLived int

	mu       sync.Mutex
	requests []request
	longLost int
	longErrs []string
	lines    int
	stop     chan struct{}
	wg       sync.WaitGroup
}

type request struct {
	start time.Time
	took  time.Duration
	err   string // "" ok, else refused | reset | timeout | other
	msg   string
}

// Begin starts the load against the web and stream addresses.
func (l *Load) Begin(webAddr, streamAddr string) {
	l.stop = make(chan struct{})
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < l.Workers; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				start := time.Now()
				err := get(hc, "http://"+webAddr+"/")
				l.mu.Lock()
				q := request{start: start, took: time.Since(start), err: classify(err)}
				if err != nil {
					q.msg = err.Error()
				}
				l.requests = append(l.requests, q)
				l.mu.Unlock()
			}
		}()
	}
	for i := 0; i < l.LongLived; i++ {
		l.wg.Add(1)
		go func(i int) {
			defer l.wg.Done()
			l.longLived(streamAddr, i)
		}(i)
	}
}

func get(hc *http.Client, url string) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || !strings.Contains(string(body), "baton demo web") {
		return fmt.Errorf("bad answer %s %q", resp.Status, body)
	}
	return nil
}

// longLived keeps one stream connection, sending a line every 10ms and checking the count
// goes on; a broken connection or a wrong count is a lost connection (then it reconnects).
func (l *Load) longLived(addr string, id int) {
	for {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			l.lose(fmt.Sprintf("conn %d: dial: %v", id, err))
			if l.stopped(100 * time.Millisecond) {
				return
			}
			continue
		}
		r := bufio.NewReader(c)
		for n := 1; ; n++ {
			if l.stopped(10 * time.Millisecond) {
				c.Close()
				return
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			want := fmt.Sprintf("%d: line %d of conn %d\n", n, n, id)
			if _, err := fmt.Fprintf(c, "line %d of conn %d\n", n, id); err != nil {
				l.lose(fmt.Sprintf("conn %d: write line %d: %v", id, n, err))
				break
			}
			got, err := r.ReadString('\n')
			if err != nil || got != want {
				l.lose(fmt.Sprintf("conn %d: line %d: got %q, %v", id, n, got, err))
				break
			}
			l.mu.Lock()
			l.lines++
			l.mu.Unlock()
		}
		c.Close()
	}
}

func (l *Load) stopped(wait time.Duration) bool {
	select {
	case <-l.stop:
		return true
	case <-time.After(wait):
		return false
	}
}

func (l *Load) lose(why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.longLost++
	if len(l.longErrs) < 10 {
		l.longErrs = append(l.longErrs, why)
	}
}

// End stops the load and waits for it.
func (l *Load) End() {
	close(l.stop)
	l.wg.Wait()
}

func classify(err error) string {
	if err == nil {
		return ""
	}
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}

// Percentiles of latency.
type Percentiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	at := func(q float64) float64 { return float64(ds[int(q*float64(len(ds)-1))]) / 1e6 }
	return Percentiles{N: len(ds), P50: at(0.50), P99: at(0.99), Max: float64(ds[len(ds)-1]) / 1e6}
}
