package handoff

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/system"
)

// FDStore keeps fds a service hands to baton (FDSTORE=1) so they survive its crash, restart
// and upgrade, and passes them back on the next start, after the sockets, by name. An fd is
// dropped when it reports POLLHUP or POLLERR, unless stored with FDPOLL=0.
type FDStore struct {
	max int
	log *slog.Logger

	mu      sync.Mutex
	entries []*storeEntry
	closing []int // removed while the watcher may be polling them; it closes them
	wakeR   *os.File
	wakeW   *os.File
	closed  bool
}

// Fds are kept as numbers, never as *os.File: File.Fd() would switch a service's non-blocking
// socket to blocking mode for every process sharing it.
type storeEntry struct {
	name     string
	fd       int
	poll     bool
	dev, ino uint64 // what it is: a service storing the same memfd after each restart sends a new fd for it each time
}

// StoredFD describes a stored fd for status output.
type StoredFD struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // socket, pipe, file, …
	Poll bool   `json:"poll"`
}

// NewFDStore returns a store holding at most max fds.
func NewFDStore(max int, log *slog.Logger) (*FDStore, error) {
	s := &FDStore{max: max, log: log}
	if max == 0 {
		return s, nil
	}
	var err error
	if s.wakeR, s.wakeW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("fd store: %w", err)
	}
	go s.watch()
	return s, nil
}

// ErrStoreDisabled means the service has no fd store (fdstore_max = 0).
var ErrStoreDisabled = errors.New("fd store disabled (fdstore_max = 0)")

// Add takes ownership of fds under name. Fds beyond the limit are closed and reported.
func (s *FDStore) Add(name string, fds []int, poll bool) error {
	if s.max == 0 {
		closeAll(fds)
		return ErrStoreDisabled
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var refused []int
	for i, fd := range fds {
		// An fd for a file already held (same st_dev and st_ino, as systemd compares them)
		// is not stored twice: the copy is closed.
		e := &storeEntry{name: name, fd: fd, poll: poll}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil {
			e.dev, e.ino = st.Dev, st.Ino
			if s.holds(e) {
				unix.Close(fd)
				continue
			}
		}
		if len(s.entries) >= s.max || s.closed {
			refused = fds[i:]
			break
		}
		s.entries = append(s.entries, e)
	}
	s.wake()
	if len(refused) > 0 {
		closeAll(refused)
		return fmt.Errorf("fd store full (fdstore_max = %d): %d fd(s) named %q refused", s.max, len(refused), name)
	}
	return nil
}

func (s *FDStore) holds(e *storeEntry) bool {
	for _, x := range s.entries {
		if x.ino != 0 && x.dev == e.dev && x.ino == e.ino {
			return true
		}
	}
	return false
}

// Remove drops every fd stored under name and returns how many there were.
func (s *FDStore) Remove(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removeLocked(func(e *storeEntry) bool { return e.name == name })
}

func (s *FDStore) removeLocked(match func(*storeEntry) bool) int {
	kept, n := s.entries[:0], 0
	for _, e := range s.entries {
		if match(e) {
			s.closing = append(s.closing, e.fd)
			n++
		} else {
			kept = append(kept, e)
		}
	}
	s.entries = kept
	if n > 0 {
		s.wake()
	}
	return n
}

// Files returns duplicates of the stored fds to pass to a new process, in the order they
// were stored. The caller owns them and must close them (after the fork). Duplicates, taken
// under the lock: once it is released the watcher may close a stored fd that hung up, and its
// number, reused by the next open, would pass another file under the stored name.
func (s *FDStore) Files() []NamedFile {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]NamedFile, 0, len(s.entries))
	for _, e := range s.entries {
		// Above 2, so a duplicate never lands on a free stdio number.
		fd, err := unix.FcntlInt(uintptr(e.fd), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			s.log.Error("fd store: a stored fd is not passed on", "name", e.name,
				"err", fmt.Errorf("fcntl(%d, F_DUPFD_CLOEXEC): %w", e.fd, err))
			continue
		}
		out = append(out, NamedFile{Name: e.name, Fd: fd})
	}
	return out
}

// List describes the stored fds.
func (s *FDStore) List() []StoredFD {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]StoredFD, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, StoredFD{Name: e.name, Kind: fdKind(e.fd), Poll: e.poll})
	}
	return out
}

// Clear drops every stored fd (an explicit stop of the service flushes its store).
func (s *FDStore) Clear() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removeLocked(func(*storeEntry) bool { return true })
}

// Close drops everything and ends the watcher.
func (s *FDStore) Close() {
	s.Clear()
	s.mu.Lock()
	s.closed = true
	s.wake()
	s.mu.Unlock()
}

func (s *FDStore) wake() {
	if s.wakeW != nil {
		_, _ = s.wakeW.Write([]byte{0})
	}
}

// watch polls the stored fds for POLLHUP/POLLERR. Only this goroutine closes removed fds, so
// a number it is polling is never reused under it. A panic in one round is logged and the
// next round runs: a watcher that ended would keep hung-up fds forever.
func (s *FDStore) watch() {
	buf := make([]byte, 64)
	for {
		more := true // stays true when the round panics
		system.Contain(s.log, "fd store watcher", func() { more = s.watchRound(buf) })
		if !more {
			return
		}
	}
}

// watchHook, when set by a test, runs in each watcher round after the poll (to inject a panic).
var watchHook atomic.Pointer[func(*FDStore)]

// watchRound waits for a stored fd to hang up (or for a change to the store) and drops what
// hung up. It reports false when the store is closed.
func (s *FDStore) watchRound(buf []byte) bool {
	pfds, watched, open := s.pollSet()
	if !open {
		return false
	}
	if _, err := unix.Poll(pfds, -1); err != nil && !errors.Is(err, unix.EINTR) {
		s.log.Error("fd store: poll failed; hung-up fds are no longer dropped", "err", fmt.Errorf("poll(%d fds): %w", len(pfds), err))
		return false
	}
	if h := watchHook.Load(); h != nil {
		(*h)(s)
	}
	if pfds[0].Revents&unix.POLLIN != 0 {
		_, _ = s.wakeR.Read(buf)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range watched {
		if pfds[i+1].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			if s.removeLocked(func(x *storeEntry) bool { return x == e }) > 0 {
				s.log.Info("fd store: dropped an fd that hung up", "name", e.name)
			}
		}
	}
	return true
}

// pollSet closes the fds removed since the last round and lists those to poll: the wake-up
// pipe first. It reports false, having closed the pipe, when the store is closed.
func (s *FDStore) pollSet() (pfds []unix.PollFd, watched []*storeEntry, open bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	closeAll(s.closing)
	s.closing = nil
	if s.closed {
		s.wakeR.Close()
		s.wakeW.Close()
		return nil, nil, false
	}
	pfds = []unix.PollFd{{Fd: int32(s.wakeR.Fd()), Events: unix.POLLIN}}
	for _, e := range s.entries {
		if e.poll {
			pfds = append(pfds, unix.PollFd{Fd: int32(e.fd)}) // HUP and ERR are always reported
			watched = append(watched, e)
		}
	}
	return pfds, watched, true
}

func fdKind(fd int) string {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "unknown"
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFIFO:
		return "pipe"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFREG:
		return "file"
	default:
		return "other"
	}
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
