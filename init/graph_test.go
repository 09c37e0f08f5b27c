package main

import (
	"bytes"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-init/baton/config"
)

func graphLog() (*slog.Logger, *syncBuffer) {
	var b syncBuffer
	return slog.New(slog.NewTextHandler(&b, nil)), &b
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// events records the order in which steps began and ended.
type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	e.got = append(e.got, s)
	e.mu.Unlock()
}

func (e *events) index(s string) int { return slices.Index(e.got, s) }

func (e *events) step(name string, after ...string) step {
	return step{name: name, after: after, run: func() error { e.add("begin " + name); e.add("end " + name); return nil }}
}

func TestGraphRunsEachStepAfterWhatItWaitsFor(t *testing.T) {
	log, _ := graphLog()
	var ev events
	steps := []step{
		ev.step("base"),
		ev.step("modules", "base"),
		ev.step("cgroups", "base"),
		ev.step("control", "cgroups"),
		ev.step("network", "modules", "control"),
		ev.step("web", "control"),
	}
	timings := runGraph(log, steps)
	for _, s := range steps {
		for _, a := range s.after {
			if ev.index("end "+a) > ev.index("begin "+s.name) {
				t.Errorf("%s began before %s ended: %v", s.name, a, ev.got)
			}
		}
	}
	if len(timings) != len(steps) {
		t.Fatalf("%d timings for %d steps", len(timings), len(steps))
	}
	for i, tm := range timings {
		if tm.Name != steps[i].name || tm.Err != nil || !slices.Equal(tm.After, steps[i].after) {
			t.Errorf("timing %d = %+v, want step %q in list order, no error, after %v", i, tm, steps[i].name, steps[i].after)
		}
	}
}

// Two steps that wait for each other's start can only both end if they run at the same time.
func TestGraphRunsIndependentStepsInParallel(t *testing.T) {
	log, _ := graphLog()
	aUp, bUp := make(chan struct{}), make(chan struct{})
	meet := func(mine, other chan struct{}) func() error {
		return func() error {
			close(mine)
			select {
			case <-other:
				return nil
			case <-time.After(10 * time.Second):
				return errors.New("the other step never ran at the same time")
			}
		}
	}
	timings := runGraph(log, []step{
		{name: "modules", run: meet(aUp, bUp)},
		{name: "web", run: meet(bUp, aUp)},
	})
	for _, tm := range timings {
		if tm.Err != nil {
			t.Errorf("%s: %v", tm.Name, tm.Err)
		}
	}
}

// A failed or panicking step does not stop the boot: what waits for it still runs, with a
// line naming what failed, as each step must leave the machine usable when it fails.
func TestGraphFailedOrPanickingDependencyLetsDependentsRun(t *testing.T) {
	log, buf := graphLog()
	ran := map[string]bool{}
	var mu sync.Mutex
	mark := func(name string) func() error {
		return func() error { mu.Lock(); ran[name] = true; mu.Unlock(); return nil }
	}
	timings := runGraph(log, []step{
		{name: "load config", run: func() error { return errors.New("config broken") }},
		{name: "load kernel modules", run: func() error { panic("injected") }},
		{name: "start control API", after: []string{"load config"}, run: mark("control")},
		{name: "configure network", after: []string{"load kernel modules", "start control API"}, run: mark("network")},
	})
	if !ran["control"] || !ran["network"] {
		t.Errorf("dependents of failed steps did not run: %v", ran)
	}
	var pe *panicError
	if !errors.As(timings[1].Err, &pe) {
		t.Errorf("panicking step: err %v, want a contained panic", timings[1].Err)
	}
	out := buf.String()
	for _, want := range []string{
		`msg="step failed" step="load config"`, "config broken",
		`msg="step failed" step="load kernel modules"`, "panic in step load kernel modules: injected",
		`msg="step runs although what it waits for failed" step="start control API" failed="load config"`,
		`step="configure network" failed="load kernel modules"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestGraphSaysWhatAStepWaitedFor(t *testing.T) {
	log, buf := graphLog()
	slowDone := make(chan struct{})
	timings := runGraph(log, []step{
		{name: "fast", run: func() error { return nil }},
		{name: "slow", run: func() error { <-slowDone; return nil }},
		{name: "unblock", after: []string{"fast"}, run: func() error { close(slowDone); return nil }},
		{name: "both", after: []string{"slow", "fast"}, run: func() error { return nil }},
	})
	if got := timings[3].WaitedFor; got != "slow" {
		t.Errorf("both waited for %q, want slow (it ended after fast)", got)
	}
	if timings[0].WaitedFor != "" {
		t.Errorf("a step with nothing to wait for says it waited for %q", timings[0].WaitedFor)
	}
	if !strings.Contains(buf.String(), `msg="step done" step=both`) || !strings.Contains(buf.String(), "after=slow") {
		t.Errorf("log does not say what 'both' waited for:\n%s", buf.String())
	}
}

// A graph that names a step not listed before it is a bug; the boot still runs every step,
// one by one in list order, and says why.
func TestGraphInvalidRunsAsALine(t *testing.T) {
	for _, tc := range []struct {
		steps []step
		want  string
	}{
		{[]step{{name: "a", after: []string{"b"}}, {name: "b"}}, `step \"a\" waits for \"b\", which is not listed before it`},
		{[]step{{name: "a"}, {name: "b", after: []string{"nope"}}}, `step \"b\" waits for \"nope\"`},
		{[]step{{name: "a"}, {name: "a"}}, `step \"a\" is listed twice`},
	} {
		log, buf := graphLog()
		var order []string
		for i := range tc.steps {
			name := tc.steps[i].name
			tc.steps[i].run = func() error { order = append(order, name); return nil }
		}
		runGraph(log, tc.steps)
		if len(order) != len(tc.steps) || !strings.Contains(buf.String(), tc.want) || !strings.Contains(buf.String(), "running the steps one by one") {
			t.Errorf("ran %v; log:\n%s\nwant every step and %q", order, buf.String(), tc.want)
		}
	}
}

// The boot's own graph: valid, the held sockets bound before the network, services waiting for
// the network or a mount only when they need it, and a service after the one it is ordered after.
func TestBootGraph(t *testing.T) {
	web := config.Service{Name: "web", Exec: []string{"/bin/web"}}
	api := config.Service{Name: "api", Exec: []string{"/bin/api"}, After: []string{"db"}}
	db := config.Service{Name: "db", Exec: []string{"/bin/db"}, StateDir: "db"}
	puller := config.Service{Name: "sync", Exec: []string{"/bin/sync"}, NeedsNetwork: true}
	m := &machine{cfg: &config.Config{
		Service: []config.Service{web, api, db, puller},
		Mount:   []config.Mount{{Target: "/var/lib"}},
		Control: config.Control{Remote: "0.0.0.0:7000"},
	}}
	steps := m.bootGraph()
	if err := checkGraph(steps); err != nil {
		t.Fatal(err)
	}
	after := map[string][]string{}
	for _, s := range steps {
		after[s.name] = s.after
	}
	for _, tc := range []struct {
		step       string
		has, lacks []string
	}{
		// Not after the modules: it waits for its interface while they load.
		{stepNetwork, []string{stepControl}, []string{stepModules}},
		{"start watchdog", []string{stepModules}, nil},
		{serviceStep("web"), []string{stepControl}, []string{stepNetwork, stepMounts, stepModules}},
		{serviceStep("db"), []string{stepControl, stepMounts}, []string{stepNetwork}},
		{serviceStep("api"), []string{serviceStep("db")}, []string{stepNetwork}},
		{serviceStep("sync"), []string{stepNetwork}, nil},
		{"confirm update", []string{stepUpdates, serviceStep("web"), serviceStep("sync")}, nil},
		// after web, not after db (a mount), api (after db) or sync (the network)
		{"start remote control API", []string{serviceStep("web")}, []string{serviceStep("db"), serviceStep("api"), serviceStep("sync"), stepNetwork}},
	} {
		got, ok := after[tc.step]
		if !ok {
			t.Errorf("no step %q", tc.step)
			continue
		}
		for _, h := range tc.has {
			if !slices.Contains(got, h) {
				t.Errorf("%q waits for %v, not for %q", tc.step, got, h)
			}
		}
		for _, l := range tc.lacks {
			if slices.Contains(got, l) {
				t.Errorf("%q waits for %q (all: %v)", tc.step, l, got)
			}
		}
	}
}

func TestUsesMount(t *testing.T) {
	mounts := []config.Mount{{Target: "/data"}, {Target: "/boot"}}
	for _, tc := range []struct {
		s    config.Service
		want string
	}{
		{config.Service{Exec: []string{"/bin/web"}}, ""},
		{config.Service{Exec: []string{"/data/bin/app"}}, "/data"},
		{config.Service{Exec: []string{"/bin/app"}, Dir: "/data/app"}, "/data"},
		{config.Service{Exec: []string{"/bin/app"}, EnvironmentFile: []string{"-/boot/app.env"}}, "/boot"},
		{config.Service{Exec: []string{"/bin/app"}, Socket: []config.Socket{{Listen: "unix:///data/app.sock"}}}, "/data"},
		{config.Service{Exec: []string{"/bin/app"}, Dir: "/database"}, ""},
	} {
		if got := usesMount(tc.s, mounts); got != tc.want {
			t.Errorf("usesMount(%+v) = %q, want %q", tc.s, got, tc.want)
		}
	}
}

// One slot: the second start waits until the first is done, or until the first has held its
// slot for the hold time; a slot given back twice frees one slot only.
func TestStartSlots(t *testing.T) {
	s := newStartSlots(1)
	done := s.take(0, time.Hour)
	got := make(chan func(), 1)
	go func() { got <- s.take(0, time.Hour) }()
	select {
	case <-got:
		t.Fatal("a second start took the only slot while the first held it")
	case <-time.After(50 * time.Millisecond):
	}
	done()
	done() // once only
	var second func()
	select {
	case second = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the slot did not come back when the first start was done")
	}
	third := make(chan struct{})
	go func() { s.take(0, time.Hour); close(third) }()
	select {
	case <-third:
		t.Fatal("done called twice freed two slots")
	case <-time.After(50 * time.Millisecond):
	}
	second()
	<-third

	// A start that holds its slot past the hold time lets the next one go.
	s = newStartSlots(1)
	s.take(0, 20*time.Millisecond)
	next := make(chan struct{})
	go func() { s.take(0, time.Hour); close(next) }()
	select {
	case <-next:
	case <-time.After(10 * time.Second):
		t.Fatal("a start holding its slot past the hold time kept the next one waiting")
	}
}

// Waiting starts get the slot in rank order (the configured start order), whatever order
// they asked in.
func TestStartSlotsRankOrder(t *testing.T) {
	s := newStartSlots(1)
	done := s.take(0, time.Hour)
	order := make(chan int, 3)
	var wg sync.WaitGroup
	for i, r := range []int{3, 1, 2} {
		wg.Add(1)
		go func() { defer wg.Done(); d := s.take(r, time.Hour); order <- r; d() }()
		waitForWaiters(t, s, i+1) // asked in this order: 3, 1, 2
	}
	done()
	wg.Wait()
	close(order)
	var got []int
	for r := range order {
		got = append(got, r)
	}
	if !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("slots given in order %v, want 1, 2, 3", got)
	}
}

// An early service that has not asked yet keeps its turn: a later one that asks first waits.
func TestStartSlotsExpected(t *testing.T) {
	s := newStartSlots(1)
	s.expect(0, 1)
	got := make(chan int, 2)
	go func() { d := s.take(1, time.Hour); got <- 1; d() }()
	select {
	case <-got:
		t.Fatal("rank 1 started before rank 0, which is expected, asked")
	case <-time.After(50 * time.Millisecond):
	}
	go func() { d := s.take(0, time.Hour); got <- 0; d() }()
	if a, b := <-got, <-got; a != 0 || b != 1 {
		t.Errorf("started %d then %d, want 0 then 1", a, b)
	}
}

// settled closes once every expected rank has given its slot back (done, or the hold time),
// not when the first has; with nothing expected it is closed at once.
func TestStartSlotsSettled(t *testing.T) {
	if s := newStartSlots(1); !isClosed(s.settled()) {
		t.Error("nothing expected, not settled")
	}
	s := newStartSlots(1)
	s.expect(0, 1)
	s.expect(1) // said twice, counted once
	first := s.take(0, time.Hour)
	if isClosed(s.settled()) {
		t.Fatal("settled while the first early start holds its slot")
	}
	first()
	if isClosed(s.settled()) {
		t.Fatal("settled before the second early start had its turn")
	}
	s.take(1, 30*time.Millisecond) // never done: the hold gives it back
	select {
	case <-s.settled():
	case <-time.After(10 * time.Second):
		t.Fatal("not settled after the last early start's hold ran out")
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// What held a step up inside its run (a service start waiting for a CPU) is added to what it
// waited for, in the timing (initctl analyze) and the console line.
func TestGraphSaysWhatHeldAStepUpInside(t *testing.T) {
	log, buf := graphLog()
	timings := runGraph(log, []step{
		{name: "control", run: func() error { return nil }},
		{name: "start service web", after: []string{"control"}, run: func() error { return nil },
			heldBy: func() string { return "a CPU (915ms)" }},
		{name: "alone", run: func() error { return nil }, heldBy: func() string { return "a CPU (20ms)" }},
		{name: "not held", run: func() error { return nil }, heldBy: func() string { return "" }},
	})
	if got := timings[1].WaitedFor; got != "control, then a CPU (915ms)" {
		t.Errorf("web waited for %q, want control, then a CPU (915ms)", got)
	}
	if got := timings[2].WaitedFor; got != "a CPU (20ms)" {
		t.Errorf("a step with no dependency held up inside says %q, want a CPU (20ms)", got)
	}
	if got := timings[3].WaitedFor; got != "" {
		t.Errorf("a step not held up says %q", got)
	}
	if !strings.Contains(buf.String(), `after="control, then a CPU (915ms)"`) {
		t.Errorf("the console line does not say it:\n%s", buf.String())
	}
}

// waitForWaiters waits until n starts wait for a slot.
func waitForWaiters(t *testing.T, s *startSlots, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		got := len(s.waiting)
		s.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d starts waiting for a slot after 10 s, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}
