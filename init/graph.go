package main

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/baton-init/baton/system"
)

// runGraph runs the boot's steps as a dependency graph: each step starts as soon as every step
// named in its after list has ended, so steps that do not depend on each other run at the same
// time (the services start while modules load and the network comes up). It returns the
// timings in list order.
//
// A step whose dependency failed still runs, with a log line saying so: every step must leave
// the machine usable when it fails (a failed module load still lets the network try, a broken
// config still lets the control API come up), which is what the line of steps did too. A
// panic is contained as in runSteps and counts as a failure.
//
// Each after entry must name a step earlier in the list, so the list itself is an order in which
// the steps could run one by one and a cycle cannot be written. A list that breaks this rule is
// a bug in baton: it is reported and the steps run one by one in list order instead.
func runGraph(log *slog.Logger, steps []step) []timing {
	if err := checkGraph(steps); err != nil {
		log.Error("boot graph invalid; running the steps one by one", "err", err)
		return runSteps(log, steps)
	}
	type node struct {
		done chan struct{}
		t    timing
	}
	nodes := make(map[string]*node, len(steps))
	for _, s := range steps {
		nodes[s.name] = &node{done: make(chan struct{})}
	}
	began := time.Now()
	var wg sync.WaitGroup
	for _, s := range steps {
		n := nodes[s.name]
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(n.done)
			var failed []string
			for _, a := range s.after {
				d := nodes[a]
				<-d.done
				if d.t.Err != nil {
					failed = append(failed, a)
				}
			}
			n.t = timing{Name: s.name, After: s.after, Service: s.service, At: system.Uptime()}
			n.t.Waited = time.Since(began)
			n.t.WaitedFor = lastEnded(s.after, func(a string) time.Time { return nodes[a].t.end })
			if len(failed) > 0 {
				log.Warn("step runs although what it waits for failed", "step", s.name, "failed", strings.Join(failed, ", "))
			}
			if s.background {
				// This goroutine ends with the step, and its thread with it.
				_ = system.SetThreadPriority(system.BackgroundNice)
			}
			start := time.Now()
			n.t.Err = runContained(log, s)
			n.t.end = time.Now()
			n.t.Took = n.t.end.Sub(start)
			if s.heldBy != nil {
				if h := s.heldBy(); h != "" {
					n.t.WaitedFor = strings.TrimPrefix(n.t.WaitedFor+", then "+h, ", then ")
				}
			}
			logTiming(log, n.t)
		}()
	}
	wg.Wait()
	out := make([]timing, 0, len(steps))
	for _, s := range steps {
		out = append(out, nodes[s.name].t)
	}
	return out
}

// lastEnded is the dependency that ended last: the one a step actually waited for.
func lastEnded(after []string, end func(string) time.Time) string {
	var last string
	var at time.Time
	for _, a := range after {
		if e := end(a); last == "" || e.After(at) {
			last, at = a, e
		}
	}
	return last
}

func logTiming(log *slog.Logger, t timing) {
	attrs := []any{"step", t.Name, "took", t.Took}
	if t.WaitedFor != "" {
		attrs = append(attrs, "after", t.WaitedFor)
	}
	if t.Err != nil {
		log.Error("step failed", append(attrs, "err", t.Err)...)
		return
	}
	log.Info("step done", attrs...)
}

// checkGraph reports a name used twice, or an after entry that names no earlier step.
func checkGraph(steps []step) error {
	seen := map[string]bool{}
	for _, s := range steps {
		if seen[s.name] {
			return fmt.Errorf("step %q is listed twice", s.name)
		}
		for _, a := range s.after {
			if !seen[a] {
				return fmt.Errorf("step %q waits for %q, which is not listed before it", s.name, a)
			}
		}
		seen[s.name] = true
	}
	return nil
}
