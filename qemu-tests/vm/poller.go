package vm

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Poller requests a URL every 10 milliseconds, each request on a new connection and in its own
// goroutine, so one that hangs on a guest that is down (QEMU's user network accepts on the host
// side and then retries the guest) never delays the next: the first answer after a downtime
// is seen within milliseconds. Downtime is measured from the last good answer before to the
// first good answer after.
//
// What counts as a failure, and why CPU starvation alone cannot make one: a request fails when
// its connection is refused, reset or closed before a whole answer (QEMU's forward closes the
// host side when the guest refuses), when the answer is not 200, or when no whole answer came
// within the timeout. A starved host or guest only makes answers slow, and the default timeout
// (NoFailTimeout, 10 s) is far above what slowness costs: QEMU's forwards listen with a backlog
// of 1, so on a busy host a SYN is dropped and the kernel resends it after 1 s and again after
// 3 s, and a TCG guest answers within a second or two even beside `stress -c 2`. A tick on which
// MaxInFlight requests are still out sends nothing and is counted as skipped, not failed.
type Poller struct {
	url  string
	opts PollOptions
	hc   *http.Client

	stop chan struct{}
	done sync.WaitGroup

	mu      sync.Mutex
	answers []time.Time // completion times of good answers
	failed  []Failure
	skipped int
	changed chan struct{} // closed and replaced on every result
	down    bool          // the latest-started request of those that ended failed
	downAt  time.Time     // when the request that set down started

	// Failures counts failed requests (len of Failed, readable without the lock).
	Failures atomic.Int64
}

// PollOptions say how often a Poller requests and how long one request may take.
type PollOptions struct {
	// Timeout is how long a request may take before it fails with reason "timeout";
	// NoFailTimeout by default.
	Timeout time.Duration
	// Every is the interval between requests; 10 ms by default.
	Every time.Duration
	// MaxInFlight bounds the requests out at once, so a long outage cannot pile up goroutines
	// and connections; 100 by default.
	MaxInFlight int
	// PaceWhileDown, when set, spaces the requests' starts by at least this much while the
	// latest request to end failed. Without it, the requests of an outage start in bursts:
	// MaxInFlight of them within a few ticks, all given up Timeout later, then the next burst;
	// the first answer after the outage then waits for the next burst (up to ~Timeout). Paced,
	// they start evenly, and the outage's end is seen within about PaceWhileDown.
	PaceWhileDown time.Duration
}

const (
	// NoFailTimeout is the timeout of a poller whose failures fail a test ("no request may
	// fail during the upgrade"): three SYN retransmits and a slow answer fit in it.
	NoFailTimeout = 10 * time.Second
	// GapTimeout and GapInFlight are those of a poller that only measures downtime
	// (StartPoller). While the guest is down, requests hang in QEMU's forward; giving up on one
	// after a second frees its slot for a new request, which sees the guest come back. But each
	// request given up on stays in QEMU's user network as a connection to the guest, retried
	// until the guest answers it: at 100 a second, a 20 s downtime leaves 2,000, which the
	// guest then serves (to closed clients) ahead of new requests, so they time out too and
	// leave more — on a loaded host the service never seemed to come back. Ten at once bounds
	// that to ten a second, and still sees the guest come back within ~100 ms. Its failures
	// are the downtime, expected, and no test asserts on them.
	GapTimeout  = time.Second
	GapInFlight = 10
)

// Failure is one failed request: when it was sent, how long it took, and why it failed.
type Failure struct {
	At     time.Time
	Took   time.Duration
	Reason string // refused, reset, timeout, status NNN, or other
	Err    string
}

func (f Failure) String() string {
	return fmt.Sprintf("%s %s after %v: %s", f.At.Format("15:04:05.000"), f.Reason, f.Took.Round(time.Millisecond), f.Err)
}

// Gap is a downtime: the last good answer before it and the first after.
type Gap struct{ From, To time.Time }

// StartPoller starts a downtime poller (GapTimeout) on a guest port, as the kexec tests and
// benchmarks use it: its failures are the downtime, not an error.
func StartPoller(vm *VM, guestPort int) *Poller {
	return Poll(vm.URL(guestPort, "/"), PollOptions{Timeout: GapTimeout, MaxInFlight: GapInFlight})
}

// Poll starts a poller on a guest port whose failures are meant to fail the test (NoFailTimeout
// unless o says otherwise).
func (vm *VM) Poll(guestPort int, o PollOptions) *Poller {
	return Poll(vm.URL(guestPort, "/"), o)
}

// Poll starts requesting url.
func Poll(url string, o PollOptions) *Poller {
	if o.Timeout == 0 {
		o.Timeout = NoFailTimeout
	}
	if o.Every == 0 {
		o.Every = 10 * time.Millisecond
	}
	if o.MaxInFlight == 0 {
		o.MaxInFlight = 100
	}
	p := &Poller{url: url, opts: o, stop: make(chan struct{}), changed: make(chan struct{}),
		hc: &http.Client{Timeout: o.Timeout, Transport: &http.Transport{DisableKeepAlives: true}}}
	inflight := make(chan struct{}, o.MaxInFlight)
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		tick := time.NewTicker(o.Every)
		defer tick.Stop()
		var lastStart time.Time
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			if o.PaceWhileDown > 0 && time.Since(lastStart) < o.PaceWhileDown {
				p.mu.Lock()
				down := p.down
				p.mu.Unlock()
				if down {
					continue
				}
			}
			select {
			case inflight <- struct{}{}:
			default:
				p.mu.Lock()
				p.skipped++
				p.mu.Unlock()
				continue
			}
			lastStart = time.Now()
			p.done.Add(1)
			go func() {
				defer p.done.Done()
				defer func() { <-inflight }()
				p.request()
			}()
		}
	}()
	return p
}

func (p *Poller) request() {
	at := time.Now()
	reason, err := p.get()
	p.mu.Lock()
	defer p.mu.Unlock()
	// One that started before the latest known outcome's request (a request from the outage
	// timing out after the guest answered again) says nothing about now.
	if !at.Before(p.downAt) {
		p.down, p.downAt = err != nil, at
	}
	if err == nil {
		p.answers = append(p.answers, time.Now())
	} else {
		p.failed = append(p.failed, Failure{At: at, Took: time.Since(at), Reason: reason, Err: err.Error()})
		p.Failures.Add(1)
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// get is one request; a body that does not arrive whole is a failure like a reset.
func (p *Poller) get() (string, error) {
	resp, err := p.hc.Get(p.url)
	if err != nil {
		return Reason(err), err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return Reason(err), err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("status %d", resp.StatusCode), fmt.Errorf("GET %s: %s", p.url, resp.Status)
	}
	return "", nil
}

// Reason names why a request failed: refused, reset (a reset or a connection closed before the
// whole answer), timeout, or other.
func Reason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "reset"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}

// Result is what a poller saw.
type Result struct {
	Answers int
	Failed  []Failure
	// Skipped counts ticks with MaxInFlight requests out: nothing was sent, nothing failed.
	Skipped int
	Timeout time.Duration
}

// String summarizes: the counts, the failures by reason, and the first failures in full.
func (r Result) String() string {
	s := fmt.Sprintf("%d answers, %d failed, %d ticks skipped (timeout %v)", r.Answers, len(r.Failed), r.Skipped, r.Timeout)
	if len(r.Failed) == 0 {
		return s
	}
	byReason := map[string]int{}
	for _, f := range r.Failed {
		byReason[f.Reason]++
	}
	var reasons []string
	for k, n := range byReason {
		reasons = append(reasons, fmt.Sprintf("%d %s", n, k))
	}
	sort.Strings(reasons)
	s += " — " + strings.Join(reasons, ", ") + ":"
	for i, f := range r.Failed {
		if i == 10 {
			s += fmt.Sprintf("\n  … and %d more", len(r.Failed)-i)
			break
		}
		s += "\n  " + f.String()
	}
	return s
}

// Result is what the poller saw so far (requests still out are not in it).
func (p *Poller) Result() Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Result{Answers: len(p.answers), Failed: append([]Failure(nil), p.failed...), Skipped: p.skipped, Timeout: p.opts.Timeout}
}

// WaitAnswers waits until the poller has had n good answers in all, so a check that needs
// answers before an event (a downtime's start) has them.
func (p *Poller) WaitAnswers(t TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		got, changed := len(p.answers), p.changed
		p.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%s: %d good answers within %s, want %d: %s", p.url, got, timeout, n, p.Result())
		}
	}
}

// WaitGap waits for the first good answer after moment at (say, when a console line showed the
// machine was rebooting) and returns the downtime around it.
func (p *Poller) WaitGap(t TB, at time.Time, timeout time.Duration) Gap {
	t.Helper()
	deadline := time.After(timeout)
	for {
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
		changed := p.changed
		p.mu.Unlock()
		if !g.From.IsZero() && !g.To.IsZero() {
			return g
		}
		select {
		case <-changed:
		case <-deadline:
			if g.From.IsZero() {
				t.Fatalf("%s: no good answer before %s, so no downtime can be measured: %s", p.url, at.Format("15:04:05.000"), p.Result())
			}
			t.Fatalf("%s did not come back within %s: %s", p.url, timeout, p.Result())
			return Gap{}
		}
	}
}

// Length is how long the service was down.
func (g Gap) Length() time.Duration { return g.To.Sub(g.From) }

func (g Gap) String() string { return g.Length().Round(time.Millisecond).String() }

// End stops the poller, waits for its requests (each ends within the timeout) and returns
// what it saw.
func (p *Poller) End() Result {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.done.Wait()
	return p.Result()
}
