package main

import (
	"log/slog"
	"time"

	"github.com/baton-init/baton/system"
)

// step is one named part of the boot or shutdown sequence.
type step struct {
	name    string
	after   []string // the steps it waits for (runGraph only); each listed before it
	service string   // the service a boot step starts, if it starts one
	// background: runGraph runs it at system.BackgroundNice, so what the services' start
	// needs gets the CPU first (it matters on a machine with one CPU).
	background bool
	run        func() error
	// heldBy, when set, says after the run what else held the step up inside it (a service
	// start waiting for a CPU); runGraph adds it to WaitedFor.
	heldBy func() string
}

// timing is how long a step took; the boot keeps them for the console and for later analysis.
type timing struct {
	Name string
	At   time.Duration // kernel uptime when it began
	Took time.Duration
	Err  error

	After     []string      // what it waited for (runGraph)
	WaitedFor string        // of those, the one that ended last: what held it back
	Waited    time.Duration // from the graph's start to its own
	Service   string        // the service it started, if any
	end       time.Time
}

// runSteps runs the steps in order, logging each with its duration. A failed step is logged
// with its cause and the sequence goes on: each step must leave the machine usable when it
// fails, and the log must say what is missing. A panic in a step is contained the same way.
func runSteps(log *slog.Logger, steps []step) []timing {
	out := make([]timing, 0, len(steps))
	for _, s := range steps {
		t := timing{Name: s.name, At: system.Uptime()}
		start := time.Now()
		t.Err = runContained(log, s)
		t.Took = time.Since(start)
		logTiming(log, t)
		out = append(out, t)
	}
	return out
}

func runContained(log *slog.Logger, s step) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &panicError{step: s.name, value: p}
		}
	}()
	return s.run()
}

type panicError struct {
	step  string
	value any
}

func (e *panicError) Error() string {
	return "panic in step " + e.step + ": " + slog.AnyValue(e.value).String()
}
