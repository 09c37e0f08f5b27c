package system

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The reaper lives for the rest of the test binary (it owns SIGCHLD): only this test makes one.
func TestReaperKeepsReapingAfterAPanic(t *testing.T) {
	var logBuf syncBuffer
	log := slog.New(NewConsoleHandler(&logBuf, nil, slog.LevelDebug))
	panicked := make(chan struct{})
	deliverHook = func(Exit) {
		select {
		case <-panicked:
		default:
			close(panicked)
			panic("injected: first delivery")
		}
	}
	r := NewReaper(log)
	// Reapers live as long as their process: one left reaping by an earlier run of this test
	// (go test -count=N) would take this run's children and drop them as orphans.
	t.Cleanup(func() { r.Pause(); deliverHook = nil })
	start := func() (int, error) {
		return syscall.ForkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{})
	}
	// The first exit is lost to the panic; the second must still be delivered. The second
	// child starts only once the first delivery has panicked, so it cannot be the one lost.
	if _, _, err := r.StartFunc(start); err != nil {
		t.Fatal(err)
	}
	select {
	case <-panicked:
	case <-time.After(10 * time.Second):
		t.Fatal("the first child's exit never reached the reaper")
	}
	exited, pid, err := r.StartFunc(start)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-exited:
		if e.Pid != pid || !e.Success() {
			t.Errorf("got %+v (%s), want pid %d exited 0", e, e, pid)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the exit of a child started after a panic in the reaper was never delivered")
	}
	if out := logBuf.String(); !strings.Contains(out, `panic="injected: first delivery"`) || !strings.Contains(out, "TestReaperKeepsReapingAfterAPanic.func1") {
		t.Errorf("the panic is not logged with its value and the frame that panicked:\n%s", out)
	}
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
