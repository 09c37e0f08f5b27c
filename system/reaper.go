package system

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// Exit is how a reaped process ended.
type Exit struct {
	Pid    int
	Status unix.WaitStatus
}

// Success reports an exit with status 0.
func (e Exit) Success() bool { return e.Status.Exited() && e.Status.ExitStatus() == 0 }

func (e Exit) String() string {
	switch {
	case e.Status.Exited():
		return fmt.Sprintf("exited with status %d", e.Status.ExitStatus())
	case e.Status.Signaled():
		return fmt.Sprintf("killed by signal %s", unix.SignalName(e.Status.Signal()))
	default:
		return fmt.Sprintf("ended with wait status %#x", uint32(e.Status))
	}
}

// Reaper is the one place that waits for children. One goroutine turns SIGCHLD into
// wait4(-1, WNOHANG) calls, so orphans re-parented to us are reaped too, and hands each exit
// to whoever started that pid. Nothing else may wait: exec.Cmd.Wait would race with it.
type Reaper struct {
	log *slog.Logger

	mu      sync.Mutex
	waiters map[int]chan Exit

	// reapMu is held while reaping; paused stops it (reaperpause.go: a PID 1 re-exec leaves
	// its children's exits to the next process image).
	reapMu sync.Mutex
	paused bool
}

// NewReaper starts reaping. Call it before starting any child.
func NewReaper(log *slog.Logger) *Reaper {
	r := &Reaper{log: log, waiters: map[int]chan Exit{}}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD)
	go func() {
		defer Recover(log, "reaper") // reapAll contains its own panics; this is the last line
		for range sigs {
			r.reapAll()
		}
	}()
	// A child that ended before Notify took effect sent its SIGCHLD to nobody.
	r.reapAll()
	return r
}

// StartFunc starts a process (start runs syscall.ForkExec or the like and returns the pid) and
// returns a channel that receives its exit. The pid is registered under the same lock the
// reaper takes to look it up, so even a child that exits at once is delivered. Nothing else may
// wait for it: exec.Cmd.Wait would race with the reaper.
func (r *Reaper) StartFunc(start func() (int, error)) (<-chan Exit, int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := start()
	if err != nil {
		return nil, 0, err
	}
	ch := make(chan Exit, 1)
	r.waiters[pid] = ch
	return ch, pid, nil
}

// ErrNotAChild is Adopt's answer for a process that is not (or no longer) baton's child.
var ErrNotAChild = errors.New("not a child of baton")

// Adopt returns a channel that receives the exit of pid, a process baton did not start but
// that is its child now: a forking daemon whose parent exited, re-parented to PID 1 or to
// the subreaper. It fails for a process that is gone or whose parent is another process.
// The check runs under the lock the delivery takes, so a child that ends meanwhile is either
// still a zombie here (and its exit is delivered to the channel) or gone (and refused).
func (r *Reaper) Adopt(pid int) (<-chan Exit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, taken := r.waiters[pid]; taken {
		return nil, fmt.Errorf("adopt pid %d: already waited for", pid)
	}
	st, err := ReadProcStat(pid)
	if err != nil {
		return nil, fmt.Errorf("adopt pid %d: %w", pid, ErrNotAChild)
	}
	if st.PPid != os.Getpid() {
		return nil, fmt.Errorf("adopt pid %d: its parent is pid %d: %w", pid, st.PPid, ErrNotAChild)
	}
	ch := make(chan Exit, 1)
	r.waiters[pid] = ch
	return ch, nil
}

func (r *Reaper) reapAll() {
	r.reapMu.Lock()
	defer r.reapMu.Unlock()
	for !r.paused {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children; 0: none has ended
		}
		// A panic in one delivery must not end the reaping: every later wait would hang.
		Contain(r.log, "reaper: deliver the exit of pid "+strconv.Itoa(pid), func() { r.deliver(Exit{Pid: pid, Status: ws}) })
	}
}

// deliverHook, when set by a test, runs at the start of each delivery (to inject a panic).
var deliverHook func(Exit)

func (r *Reaper) deliver(e Exit) {
	if deliverHook != nil {
		deliverHook(e)
	}
	r.mu.Lock()
	ch, ok := r.waiters[e.Pid]
	delete(r.waiters, e.Pid)
	r.mu.Unlock()
	if ok {
		ch <- e
		return
	}
	r.log.Debug("reaped orphan", "pid", e.Pid, "how", e.String())
}
