package system

import (
	"log/slog"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// A PID 1 re-exec hands its children to the next process image. Their exits must reach the
// new image, not be reaped by the old one after its state was written: Pause stops reaping
// (children that end meanwhile stay zombies, still children after execve), and the new image
// starts its reaper paused, registers every child it restores (Adopt), then Resumes, which
// reaps the zombies of the gap and delivers them as ordinary exits.

// Pause stops reaping; it returns once no wait4 is in progress. Exits already delivered stay
// delivered (Waiting tells which pids are still waited for).
func (r *Reaper) Pause() {
	r.reapMu.Lock()
	r.paused = true
	r.reapMu.Unlock()
}

// Resume reaps again, first every child that ended while paused.
func (r *Reaper) Resume() {
	r.reapMu.Lock()
	r.paused = false
	r.reapMu.Unlock()
	r.reapAll()
}

// Waiting reports whether pid is registered and its exit not yet delivered.
func (r *Reaper) Waiting(pid int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.waiters[pid]
	return ok
}

// NewPausedReaper is NewReaper for a process image that first adopts the children a previous
// image left it: nothing is reaped until Resume.
func NewPausedReaper(log *slog.Logger) *Reaper {
	r := &Reaper{log: log, waiters: map[int]chan Exit{}, paused: true}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD)
	go func() {
		defer Recover(log, "reaper")
		for range sigs {
			r.reapAll()
		}
	}()
	return r
}
