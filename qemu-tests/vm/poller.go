package vm

import (
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Poller requests a guest's web service through the port forward every 10 milliseconds,
// each request on a new connection and in its own goroutine, so one that hangs on a guest that
// is down (QEMU's user network accepts on the host side and then retries the guest) never
// delays the next: the first answer after a downtime is seen within milliseconds. Downtime is
// measured the way the seed did: from the last good answer before to the first good answer
// after.
type Poller struct {
	stop     chan struct{}
	done     sync.WaitGroup
	mu       sync.Mutex
	answers  []time.Time // completion times of good answers
	Failures atomic.Int64
}

// Gap is a downtime: the last good answer before it and the first after.
type Gap struct{ From, To time.Time }

// StartPoller starts requesting guestPort every 10ms.
func StartPoller(vm *VM, guestPort int) *Poller {
	p := &Poller{stop: make(chan struct{})}
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	inflight := make(chan struct{}, 100) // bounded: a long outage cannot pile up goroutines
	url := vm.URL(guestPort, "/")
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			select {
			case inflight <- struct{}{}:
			default:
				continue
			}
			p.done.Add(1)
			go func() {
				defer p.done.Done()
				defer func() { <-inflight }()
				resp, err := hc.Get(url)
				ok := err == nil && resp.StatusCode == 200
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if !ok {
					p.Failures.Add(1)
					return
				}
				p.mu.Lock()
				p.answers = append(p.answers, time.Now())
				p.mu.Unlock()
			}()
		}
	}()
	return p
}

// WaitGap waits for the first good answer after moment at (say, when a console line showed the
// machine was rebooting) and returns the downtime around it.
func (p *Poller) WaitGap(t TB, at time.Time, timeout time.Duration) Gap {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		var g Gap
		for _, a := range p.answers {
			if a.Before(at) && a.After(g.From) {
				g.From = a
			}
			if a.After(at) && (g.To.IsZero() || a.Before(g.To)) {
				g.To = a
			}
		}
		p.mu.Unlock()
		if !g.From.IsZero() && !g.To.IsZero() {
			return g
		}
		time.Sleep(20 * time.Millisecond) // answers arrive on the poller's goroutines
	}
	t.Fatalf("web did not come back within %s", timeout)
	return Gap{}
}

// Length is how long the service was down.
func (g Gap) Length() time.Duration { return g.To.Sub(g.From) }

func (g Gap) String() string { return g.Length().Round(time.Millisecond).String() }

// End stops the poller and waits for its requests.
func (p *Poller) End() { close(p.stop); p.done.Wait() }
