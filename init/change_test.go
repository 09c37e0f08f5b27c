package main

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/kexec"
	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/update"
)

// changeMachine is a machine without PID 1 duties that can take each of the three changes:
// a kexec (its load stubbed), an update (slots in a temporary directory) and a re-exec.
type changeMachine struct {
	m *machine
	u *update.Updater
	x *reexecer
}

func newChangeMachine(t *testing.T) *changeMachine {
	m := newMachine(io.Discard)
	sv, err := services.New(&config.Config{}, services.Options{Log: m.log, Shim: "/bin/true"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sv.Close() })
	m.sv = sv
	dir := t.TempDir()
	u := &update.Updater{Boot: update.Boot{Dir: dir}, Log: m.log, SV: sv, RunDir: dir, Exclusive: m.updateExclusive,
		Kexec: func(string, string, string) error { return errors.New("no kexec in this test") }}
	u.Init()
	m.updater.Store(u)
	return &changeMachine{m: m, u: u, x: m.newReexecer()}
}

// stall is a reader (an upload) or a kexec load that says when it has started and then waits
// until it is let go: a change caught in the middle, its guard held.
type stall struct{ started, release chan struct{} }

func newStall() *stall { return &stall{started: make(chan struct{}), release: make(chan struct{})} }

func (s *stall) Read([]byte) (int, error) {
	close(s.started)
	<-s.release
	return 0, errors.New("upload cut off by the test")
}

const someSHA = "0000000000000000000000000000000000000000000000000000000000000000"

// Each change, caught in the middle (a kexec loading its kernel, an update receiving its image,
// a re-exec receiving its binary — past its own checks), refuses the others and names itself;
// once it is over, each of the others gets past the guard. The decision is one lock, so no
// request can slip between another's check and its start.
func TestOneChangeAtATime(t *testing.T) {
	kexecReq := control.KexecRequest{Kernel: "/boot/vmlinuz", Cmdline: "console=ttyS0", LoadOnly: true}
	changes := []struct {
		name string
		// hold starts the change and returns once it holds the guard; done waits for its end.
		hold func(t *testing.T, c *changeMachine, s *stall) (done func() error)
		// try asks for the change; busy says whether the error is the guard's refusal.
		try  func(c *changeMachine) error
		busy func(error) bool
	}{
		{name: "a kexec",
			hold: func(t *testing.T, c *changeMachine, s *stall) func() error {
				loadKernel = func(kexec.Image, kexec.Method) (kexec.Result, error) {
					close(s.started)
					<-s.release
					return kexec.Result{Method: kexec.File}, nil
				}
				errc := make(chan error, 1)
				go func() { _, err := c.m.kexecRequest(kexecReq); errc <- err }()
				return func() error { return <-errc }
			},
			try: func(c *changeMachine) error {
				loadKernel = func(kexec.Image, kexec.Method) (kexec.Result, error) { return kexec.Result{Method: kexec.File}, nil }
				_, err := c.m.kexecRequest(kexecReq)
				return err
			},
			busy: func(err error) bool {
				return err != nil && (strings.Contains(err.Error(), "kexec refused: ") || errors.Is(err, errKexecBusy))
			}},
		{name: "an update",
			hold: func(t *testing.T, c *changeMachine, s *stall) func() error {
				errc := make(chan error, 1)
				go func() { errc <- c.u.Receive(update.InitrdFile, 1<<20, someSHA, s) }()
				return func() error { return <-errc }
			},
			try: func(c *changeMachine) error {
				_, err := c.u.Apply(update.ApplyRequest{DryRun: true})
				return err
			},
			busy: func(err error) bool { return errors.Is(err, update.ErrNotNow) || errors.Is(err, update.ErrBusy) }},
		{name: "a re-exec",
			hold: func(t *testing.T, c *changeMachine, s *stall) func() error {
				errc := make(chan error, 1)
				go func() { _, _, err := c.x.Prepare(s, someSHA); errc <- err }()
				return func() error { return <-errc }
			},
			try: func(c *changeMachine) error {
				// A digest that does not match: refused after the guard, before any trial.
				_, _, err := c.x.Prepare(strings.NewReader("not a binary"), someSHA)
				return err
			},
			busy: func(err error) bool { return errors.Is(err, control.ErrReexecBusy) }},
	}
	defer func() { loadKernel = kexec.LoadWith }()
	for _, holder := range changes {
		for _, other := range changes {
			t.Run(holder.name+" then "+other.name, func(t *testing.T) {
				c := newChangeMachine(t)
				s := newStall()
				done := holder.hold(t, c, s)
				select {
				case <-s.started:
				case <-time.After(10 * time.Second):
					t.Fatalf("%s did not start", holder.name)
				}
				err := other.try(c)
				if !other.busy(err) {
					t.Errorf("%s while %s is under way: %v, want a refusal", other.name, holder.name, err)
				}
				if holder.name != other.name && (err == nil || !strings.Contains(err.Error(), holder.name+" is under way")) {
					t.Errorf("the refusal does not name %s: %v", holder.name, err)
				}
				close(s.release)
				_ = done()
				if err := other.try(c); other.busy(err) {
					t.Errorf("%s after %s ended: %v, want past the guard", other.name, holder.name, err)
				}
			})
		}
	}
}
