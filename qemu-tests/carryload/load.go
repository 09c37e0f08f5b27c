// Package carryload is the host-side load of the keep_connections test and benchmark:
// long-lived connections to a line counter (examples/stream), each sending a line in turn
// and checking its numbered answer, and a loop of HTTP requests on new connections. Every
// client waits up to Timeout for an answer: QEMU's user-mode network retransmits to a guest
// that does not answer on a doubling backoff, and a kexec is seconds of silence.
package carryload

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Timeout is how long any client waits for an answer before it counts a failure. A client
// whose SYN met the drop of a kexec's shutdown, or whose connection is carried, waits for the
// whole jump and boot; QEMU's user network retries a SYN to the guest 3, 9, 21 and 45 s after
// the first try (measured for issue 15, README). 90 s covers the 45 s try with room for a slow
// answer, so a shutdown-to-restore window of up to 45 s costs no request; a connection really
// lost still fails, after 90 s. At 30 s, a make test under stress -c 2 failed 6 of 10,280
// requests on timeouts alone: they were answered, only later.
const Timeout = 90 * time.Second

type clients struct {
	mu    sync.Mutex
	errs  []string
	stopc chan struct{}
	wg    sync.WaitGroup
	out   map[int]time.Time // each client's request or line waiting for its answer, by when it was sent
}

// sent and done bracket one client's wait for an answer.
func (c *clients) sent(id int, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.out == nil {
		c.out = map[int]time.Time{}
	}
	c.out[id] = at
}

func (c *clients) done(id int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.out, id)
}

// WaitSettled waits until no request or line sent before t is still waiting for its answer
// (each ends within Timeout: answered, or failed). A second kexec taken before that would
// find a client still retrying its first and count the two outages as one.
func (c *clients) WaitSettled(t time.Time, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c.mu.Lock()
		oldest := time.Time{}
		for _, at := range c.out {
			if at.Before(t) && (oldest.IsZero() || at.Before(oldest)) {
				oldest = at
			}
		}
		c.mu.Unlock()
		if oldest.IsZero() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("a client sent at %s still waits after %v", oldest.Format("15:04:05.000"), timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Lines are long-lived connections to a line counter.
type Lines struct {
	clients
	conns, total, broken int
	maxStall             time.Duration
}

// LinesResult is what the long-lived connections saw.
type LinesResult struct {
	Conns    int           `json:"conns"`
	Lines    int           `json:"lines"`     // answered in all
	Broken   int           `json:"broken"`    // connections that failed (reset, closed, timeout, a wrong count)
	MaxStall time.Duration `json:"max_stall"` // the longest wait for an answer
	Errs     []string      `json:"errors,omitempty"`
}

func (r LinesResult) String() string {
	s := fmt.Sprintf("%d of %d connections kept, %d lines answered, longest stall %v", r.Conns-r.Broken, r.Conns, r.Lines, r.MaxStall.Round(time.Millisecond))
	if len(r.Errs) > 0 {
		s += fmt.Sprintf("; first errors: %v", r.Errs[:min(5, len(r.Errs))])
	}
	return s
}

// StartLines opens n connections to addr (host:port) and keeps them talking.
func StartLines(addr string, n int) (*Lines, error) {
	lc := &Lines{clients: clients{stopc: make(chan struct{})}}
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, Timeout)
		if err != nil {
			lc.Stop()
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		lc.wg.Add(1)
		lc.conns++
		go lc.run(c, i)
	}
	return lc, nil
}

func (lc *Lines) run(c net.Conn, id int) {
	defer lc.wg.Done()
	defer c.Close()
	r := bufio.NewReader(c)
	for count := 1; ; count++ {
		select {
		case <-lc.stopc:
			return
		case <-time.After(200 * time.Millisecond):
		}
		start := time.Now()
		lc.sent(id, start)
		_ = c.SetDeadline(start.Add(Timeout))
		line := fmt.Sprintf("client %d line %d", id, count)
		_, err := fmt.Fprintln(c, line)
		var got string
		if err == nil {
			got, err = r.ReadString('\n')
		}
		if err == nil && got != strconv.Itoa(count)+": "+line+"\n" {
			err = fmt.Errorf("answer %q, want count %d", strings.TrimSpace(got), count)
		}
		stall := time.Since(start)
		lc.done(id)
		lc.mu.Lock()
		if err != nil {
			lc.broken++
			lc.errs = append(lc.errs, fmt.Sprintf("client %d after %d lines: %v", id, count-1, err))
			lc.mu.Unlock()
			return
		}
		lc.total++
		lc.maxStall = max(lc.maxStall, stall)
		lc.mu.Unlock()
	}
}

// Answered is the number of lines answered so far.
func (lc *Lines) Answered() int {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.total
}

// MaxStall is the longest wait for an answer so far.
func (lc *Lines) MaxStall() time.Duration {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.maxStall
}

// WaitLines waits until n lines were answered in all.
func (lc *Lines) WaitLines(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for lc.Answered() < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d lines answered after %v, want %d", lc.Answered(), timeout, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// Stop ends the connections (each finishes the line it waits for) and reports.
func (lc *Lines) Stop() LinesResult {
	close(lc.stopc)
	lc.wg.Wait()
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return LinesResult{Conns: lc.conns, Lines: lc.total, Broken: lc.broken, MaxStall: lc.maxStall, Errs: lc.errs}
}

// Requests are workers requesting a URL in turn, a new connection each.
type Requests struct {
	clients
	answered, failed int
	longest          time.Duration
}

// RequestsResult is what the request loop saw.
type RequestsResult struct {
	Answered int           `json:"answered"`
	Failed   int           `json:"failed"`
	Longest  time.Duration `json:"longest"`
	Errs     []string      `json:"errors,omitempty"`
}

func (r RequestsResult) String() string {
	s := fmt.Sprintf("%d requests answered, %d failed, longest %v", r.Answered, r.Failed, r.Longest.Round(time.Millisecond))
	if len(r.Errs) > 0 {
		s += fmt.Sprintf("; first errors: %v", r.Errs[:min(5, len(r.Errs))])
	}
	return s
}

// StartRequests starts workers requesting url, each every 50 ms.
func StartRequests(url string, workers int) *Requests {
	rl := &Requests{clients: clients{stopc: make(chan struct{})}}
	hc := &http.Client{Timeout: Timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < workers; i++ {
		rl.wg.Add(1)
		go func(id int) {
			defer rl.wg.Done()
			for {
				select {
				case <-rl.stopc:
					return
				case <-time.After(50 * time.Millisecond):
				}
				start := time.Now()
				rl.sent(id, start)
				err := get(hc, url)
				took := time.Since(start)
				rl.done(id)
				rl.mu.Lock()
				if err != nil {
					rl.failed++
					rl.errs = append(rl.errs, fmt.Sprintf("%s after %v: %v", start.Format("15:04:05.000"), took.Round(time.Millisecond), err))
				} else {
					rl.answered++
				}
				rl.longest = max(rl.longest, took)
				rl.mu.Unlock()
			}
		}(i)
	}
	return rl
}

func get(hc *http.Client, url string) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// Stop ends the loop (requests out finish) and reports.
func (rl *Requests) Stop() RequestsResult {
	close(rl.stopc)
	rl.wg.Wait()
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return RequestsResult{Answered: rl.answered, Failed: rl.failed, Longest: rl.longest, Errs: rl.errs}
}

// Answered is the number of requests answered so far.
func (rl *Requests) Answered() int {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return rl.answered
}

// Longest is the longest request so far.
func (rl *Requests) Longest() time.Duration {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return rl.longest
}

// WaitAnswered waits until n requests were answered in all.
func (rl *Requests) WaitAnswered(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for rl.Answered() < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d requests answered after %v, want %d", rl.Answered(), timeout, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}
