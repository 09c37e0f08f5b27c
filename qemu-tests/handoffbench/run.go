package handoffbench

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// Result is one phase: many upgrades (or restarts) of both services under load.
type Result struct {
	Name       string      `json:"name"`
	Method     string      `json:"method"` // upgrade | restart
	Cycles     int         `json:"cycles"`
	Requests   int         `json:"requests"`
	Failed     int         `json:"failed"`
	Refused    int         `json:"refused"`
	Reset      int         `json:"reset"`
	Timeout    int         `json:"timeout"`
	Other      int         `json:"other"`
	LongLived  int         `json:"long_lived"`
	LongLost   int         `json:"long_lived_lost"`
	LongLines  int         `json:"long_lived_lines"`
	LostWhy    []string    `json:"lost_why,omitempty"`
	FailedWhy  []string    `json:"failed_why,omitempty"` // a sample
	Steady     Percentiles `json:"latency_steady"`
	Window     Percentiles `json:"latency_during"`
	CycleTimes Percentiles `json:"cycle_duration"` // one cycle: both services
	Errors     []string    `json:"errors,omitempty"`
}

// Phase runs cycles of method ("upgrade" or "restart") on web and stream under load.
func Phase(a *Appliance, method string, cycles, workers, longLived int) Result {
	load := &Load{Workers: workers, LongLived: longLived}
	load.Begin(a.WebAddr, a.StreamAddr)
	time.Sleep(300 * time.Millisecond) // steady state before the first cycle
	var windows []window
	var cycleTimes []time.Duration
	var errs []string
	for i := 0; i < cycles; i++ {
		from := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, svc := range []string{"web", "stream"} {
			wg.Add(1)
			go func(svc string) {
				defer wg.Done()
				var err error
				if method == "upgrade" {
					_, err = a.Client.Upgrade(svc, "")
				} else {
					_, err = a.Client.Action(svc, "restart")
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("%s %s: %v", method, svc, err))
					mu.Unlock()
				}
			}(svc)
		}
		wg.Wait()
		to := time.Now()
		windows = append(windows, window{from, to})
		cycleTimes = append(cycleTimes, to.Sub(from))
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	load.End()
	return summarize(load, method, method, cycles, longLived, windows, cycleTimes, errs)
}

// window is when one cycle ran.
type window struct{ from, to time.Time }

// summarize counts what the load saw, telling requests that started inside a cycle's window
// from those outside.
func summarize(load *Load, name, method string, cycles, longLived int, windows []window, cycleTimes []time.Duration, errs []string) Result {
	r := Result{Name: name, Method: method, Cycles: cycles, LongLived: longLived, LongLost: load.longLost, LongLines: load.lines,
		LostWhy: load.longErrs, CycleTimes: percentiles(cycleTimes), Errors: errs}
	var steady, during []time.Duration
	for _, q := range load.requests {
		r.Requests++
		switch q.err {
		case "refused":
			r.Refused++
		case "reset":
			r.Reset++
		case "timeout":
			r.Timeout++
		case "other":
			r.Other++
		}
		if q.err != "" && len(r.FailedWhy) < 5 {
			r.FailedWhy = append(r.FailedWhy, q.msg)
		}
		in := false
		for _, w := range windows {
			if !q.start.Before(w.from) && q.start.Before(w.to) {
				in = true
				break
			}
		}
		if in {
			during = append(during, q.took)
		} else {
			steady = append(steady, q.took)
		}
	}
	r.Failed = r.Refused + r.Reset + r.Timeout + r.Other
	r.Steady, r.Window = percentiles(steady), percentiles(during)
	return r
}

// Table formats results side by side.
func Table(rs []Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-26s", "")
	for _, r := range rs {
		fmt.Fprintf(&b, "%22s", r.Name)
	}
	b.WriteString("\n")
	row := func(name string, f func(Result) string) {
		fmt.Fprintf(&b, "%-26s", name)
		for _, r := range rs {
			fmt.Fprintf(&b, "%22s", f(r))
		}
		b.WriteString("\n")
	}
	row("cycles (web + stream)", func(r Result) string { return fmt.Sprint(r.Cycles) })
	row("requests", func(r Result) string { return fmt.Sprint(r.Requests) })
	row("failed", func(r Result) string { return fmt.Sprint(r.Failed) })
	row("  refused", func(r Result) string { return fmt.Sprint(r.Refused) })
	row("  reset", func(r Result) string { return fmt.Sprint(r.Reset) })
	row("  timeout", func(r Result) string { return fmt.Sprint(r.Timeout) })
	row("  other", func(r Result) string { return fmt.Sprint(r.Other) })
	row("long-lived conns", func(r Result) string { return fmt.Sprint(r.LongLived) })
	row("long-lived lost", func(r Result) string { return fmt.Sprint(r.LongLost) })
	row("long-lived lines", func(r Result) string { return fmt.Sprint(r.LongLines) })
	ms := func(v float64) string { return fmt.Sprintf("%.2fms", v) }
	row("latency steady p50", func(r Result) string { return ms(r.Steady.P50) })
	row("latency steady p99", func(r Result) string { return ms(r.Steady.P99) })
	row("latency steady max", func(r Result) string { return ms(r.Steady.Max) })
	row("latency during p50", func(r Result) string { return ms(r.Window.P50) })
	row("latency during p99", func(r Result) string { return ms(r.Window.P99) })
	row("latency during max", func(r Result) string { return ms(r.Window.Max) })
	row("cycle duration p50", func(r Result) string { return ms(r.CycleTimes.P50) })
	row("cycle duration max", func(r Result) string { return ms(r.CycleTimes.Max) })
	return b.String()
}
