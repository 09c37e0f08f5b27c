package services

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/handoff"
	"github.com/baton-init/baton/system"
)

// A PID 1 re-exec (init/reexec.go) writes the supervisor's state down for the next process
// image, which takes the services over without starting, stopping or signalling any of them
// (restore.go). Each service's loop writes its own state, and, for the real thing, stays
// frozen afterwards: no input is handled, no timer fires, so nothing changes between the
// state written and the execve. Times are CLOCK_BOOTTIME nanoseconds (system.ToBoottime).

// Saved is the supervisor's state.
type Saved struct {
	Services []SavedService `json:"services"`
}

// SavedService is one service: its config, the fds baton holds for it (numbers valid in the
// next process image) and its loop's state.
type SavedService struct {
	Spec     config.Service    `json:"spec"`
	NextSpec *config.Service   `json:"next_spec,omitempty"`
	Held     []SavedSocket     `json:"held,omitempty"`
	BindErr  string            `json:"bind_err,omitempty"`
	Store    []handoff.SavedFD `json:"store,omitempty"`
	Notify   *SavedNotify      `json:"notify,omitempty"`
	Stdout   SavedPipe         `json:"stdout"`
	Stderr   SavedPipe         `json:"stderr"`
	Logs     []LogLine         `json:"logs,omitempty"` // the tail kept in memory
	LogNext  uint64            `json:"log_next"`

	Phase         string     `json:"phase"`
	Gens          []SavedGen `json:"gens,omitempty"`
	Cur           int        `json:"cur"` // index in Gens of the main generation; -1 for none
	Deadline      int64      `json:"deadline,omitempty"`
	WdInterval    int64      `json:"wd_interval,omitempty"`
	Backoff       int64      `json:"backoff"`
	Failures      []int64    `json:"failures,omitempty"`
	StartAfter    bool       `json:"start_after,omitempty"`
	FlushStore    bool       `json:"flush_store,omitempty"`
	Killed        bool       `json:"killed,omitempty"`
	FailAfterStop string     `json:"fail_after_stop,omitempty"`
	SelfStopping  bool       `json:"self_stopping,omitempty"`
	Cgroup        string     `json:"cgroup,omitempty"`
	Started       int64      `json:"started,omitempty"`
	ReadyAt       int64      `json:"ready_at,omitempty"`
	FirstUp       int64      `json:"first_up,omitempty"`
	FirstReady    int64      `json:"first_ready,omitempty"`
	Completed     bool       `json:"completed,omitempty"`
	Restarts      int        `json:"restarts"`
	Upgrades      int        `json:"upgrades"`
	LastExit      *SavedExit `json:"last_exit,omitempty"`
	LastEndKind   int        `json:"last_end_kind"`
	LastEndStatus int        `json:"last_end_status"`
	LastErr       string     `json:"last_err,omitempty"`
	StatusMsg     string     `json:"status_msg,omitempty"`
	MainPid       int        `json:"main_pid,omitempty"`
	NotifyDropped int        `json:"notify_dropped,omitempty"`
	NotifyLate    int        `json:"notify_late,omitempty"`
	PostPending   bool       `json:"post_pending,omitempty"` // exec_stop_post runs when this run ends
	// Carried are connections a kexec carried that wait for the service's next start.
	Carried []SavedCarried `json:"carried,omitempty"`
}

// SavedCarried is one carried connection waiting for the service's start, and its state blob.
type SavedCarried struct {
	Fd    int    `json:"fd"` // -1 in a snapshot
	State []byte `json:"state,omitempty"`
}

// SavedSocket is a held socket, by its name in the service's config.
type SavedSocket struct {
	Name string `json:"name"`
	Fd   int    `json:"fd"`
}

// SavedNotify is the service's notify socket.
type SavedNotify struct {
	Path string `json:"path"`
	Fd   int    `json:"fd"`
}

// SavedPipe is one log pipe, both ends.
type SavedPipe struct {
	R int `json:"r"`
	W int `json:"w"`
}

// SavedGen is one generation (a process baton waits for).
type SavedGen struct {
	Pid       int    `json:"pid"`
	Pgid      int    `json:"pgid"`
	Starter   bool   `json:"starter,omitempty"`
	Adopted   bool   `json:"adopted,omitempty"`
	Exec      string `json:"exec"`
	Started   int64  `json:"started"`
	Ctl       int    `json:"ctl"` // -1 for none
	KilledFor string `json:"killed_for,omitempty"`
	KilledBy  int    `json:"killed_by,omitempty"`
}

// SavedExit is a reaped process's wait status.
type SavedExit struct {
	Pid    int    `json:"pid"`
	Status uint32 `json:"status"`
}

// ErrBusy refuses a re-exec while a service is being upgraded.
var ErrBusy = errors.New("busy")

// freezeReq asks the loop for its state. With hold, the loop then stays frozen until thaw is
// closed, and the fds in the state are duplicates that survive execve (listed in dups).
type freezeReq struct {
	hold   bool
	reaper *system.Reaper
	thaw   <-chan struct{}
	reply  chan freezeAns
}

type freezeAns struct {
	saved SavedService
	dups  []int
	retry string // why not yet: an exit or a datagram is still on its way to the loop
	err   error
}

func (freezeReq) isInput() {}

// onFreeze is the loop's side (handle calls it for a freezeReq).
func (s *Service) onFreeze(r freezeReq) {
	if s.st.up != nil {
		r.reply <- freezeAns{err: fmt.Errorf("%w: service %s is being upgraded (new version pid %d)", ErrBusy, s.spec().Name, s.st.up.rep.NewPid)}
		return
	}
	if s.st.phase == pPreStart || s.st.phase == pPostStop {
		r.reply <- freezeAns{err: fmt.Errorf("%w: service %s runs its %s command", ErrBusy, s.spec().Name, s.st.phase)}
		return
	}
	if r.hold {
		// Every exit the (paused) reaper delivered and every datagram read must be handled
		// first, or it would be lost with this process image.
		for _, g := range s.st.gens {
			if !r.reaper.Waiting(g.pid) {
				r.reply <- freezeAns{retry: fmt.Sprintf("the exit of pid %d is on its way", g.pid)}
				return
			}
		}
		if s.notifyDone != nil {
			select {
			case <-s.notifyDone:
			default:
				r.reply <- freezeAns{retry: "a notify datagram is on its way"}
				return
			}
		}
		s.stdout.pauseReading()
		s.stderr.pauseReading()
	}
	saved, dups, err := s.save(r.hold)
	if err != nil {
		closeAll(dups)
		if r.hold {
			s.resumeReaders()
		}
		r.reply <- freezeAns{err: err}
		return
	}
	r.reply <- freezeAns{saved: saved, dups: dups}
	if !r.hold {
		return
	}
	select {
	case <-r.thaw:
		s.resumeReaders()
	case <-s.quit:
	}
}

// save writes the loop's state; with forExec, fds are duplicated for the next image.
func (s *Service) save(forExec bool) (SavedService, []int, error) {
	var dups []int
	var errs []error
	fd := func(n int) int {
		if !forExec || n < 0 {
			return n
		}
		d, err := handoff.DupForExec(n)
		if err != nil {
			errs = append(errs, err)
			return -1
		}
		dups = append(dups, d)
		return d
	}
	st := &s.st
	ss := SavedService{Spec: *s.spec(), NextSpec: st.nextSpec, Phase: st.phase.String(), Cur: -1,
		Deadline: system.ToBoottime(st.deadline), WdInterval: int64(st.wdInterval), Backoff: int64(st.backoff),
		StartAfter: st.startAfter, FlushStore: st.flushStore, Killed: st.killed, SelfStopping: st.selfStopping,
		Cgroup: st.cgroup, Started: system.ToBoottime(st.started), ReadyAt: system.ToBoottime(st.readyAt),
		FirstUp: system.ToBoottime(st.firstUp), FirstReady: system.ToBoottime(st.firstRdy), Completed: st.completed,
		Restarts: st.restarts, Upgrades: st.upgrades, LastEndKind: int(st.lastEnd.kind), LastEndStatus: st.lastEnd.status,
		StatusMsg: st.statusMsg, MainPid: st.mainPid, NotifyDropped: st.notifyDropped, NotifyLate: st.notifyLate,
		PostPending: st.cmds.postPending}
	if st.failAfterStop != nil {
		ss.FailAfterStop = st.failAfterStop.Error()
	}
	if st.lastErr != nil {
		ss.LastErr = st.lastErr.Error()
	}
	if s.bindErr != nil {
		ss.BindErr = s.bindErr.Error()
	}
	if e := st.lastExit; e != nil {
		ss.LastExit = &SavedExit{Pid: e.Pid, Status: uint32(e.Status)}
	}
	for _, t := range st.failures {
		ss.Failures = append(ss.Failures, system.ToBoottime(t))
	}
	for i, g := range st.gens {
		if g == st.cur {
			ss.Cur = i
		}
		ss.Gens = append(ss.Gens, SavedGen{Pid: g.pid, Pgid: g.pgid, Starter: g.starter, Adopted: g.adopted, Exec: g.exec,
			Started: system.ToBoottime(g.started), Ctl: fd(g.ctl), KilledFor: g.killedFor, KilledBy: int(g.killedBy)})
	}
	for _, h := range s.held {
		ss.Held = append(ss.Held, SavedSocket{Name: h.Spec.Name, Fd: fd(h.Fd)})
	}
	if s.notify != nil {
		n := SavedNotify{Path: s.notify.Path, Fd: -1}
		if forExec {
			d, err := s.notify.DupForExec()
			if err != nil {
				errs = append(errs, err)
			} else {
				n.Fd, dups = d, append(dups, d)
			}
		}
		ss.Notify = &n
	}
	if forExec {
		stored, err := s.store.DupForExec()
		if err != nil {
			errs = append(errs, err)
		}
		for _, e := range stored {
			dups = append(dups, e.Fd)
		}
		ss.Store = stored
	} else {
		for _, e := range s.store.List() {
			ss.Store = append(ss.Store, handoff.SavedFD{Name: e.Name, Fd: -1, Poll: e.Poll})
		}
	}
	s.carried.mu.Lock()
	for _, c := range s.carried.conns {
		n := -1
		if forExec {
			n = fd(c.Fd)
		}
		ss.Carried = append(ss.Carried, SavedCarried{Fd: n, State: c.State})
	}
	s.carried.mu.Unlock()
	ss.Stdout = SavedPipe{R: fd(rawFd(s.stdout.r)), W: fd(rawFd(s.stdout.w))}
	ss.Stderr = SavedPipe{R: fd(rawFd(s.stderr.r)), W: fd(rawFd(s.stderr.w))}
	ss.Logs, ss.LogNext = s.Logs.snapshot()
	return ss, dups, errors.Join(errs...)
}

func (s *Service) resumeReaders() {
	s.stdout.resumeReading()
	s.stderr.resumeReading()
	if s.notify != nil {
		_ = s.notify.ResumeReading()
		s.startNotifyReader()
	}
}

// startNotifyReader reads the notify socket from a goroutine; notifyDone is closed when it
// returns (the socket closed, or StopReading for a re-exec).
func (s *Service) startNotifyReader() {
	done := make(chan struct{})
	s.notifyDone = done
	go func() {
		defer close(done)
		s.readNotify()
	}()
}

// pauseReading stops the reader (a read deadline) once it has put what it read in the ring.
func (p *logPipe) pauseReading() {
	_ = p.r.SetReadDeadline(time.Unix(1, 0))
	<-p.done
}

func (p *logPipe) resumeReading() {
	_ = p.r.SetReadDeadline(time.Time{})
	p.read()
}

// snapshot is every kept line and the next sequence number.
func (r *LogRing) snapshot() ([]LogLine, uint64) {
	lines, _ := r.Since(0)
	r.mu.Lock()
	defer r.mu.Unlock()
	return lines, r.next
}

// rawFd is f's descriptor without File.Fd, which would switch it to blocking mode (and end
// the read deadlines pauseReading relies on).
func rawFd(f *os.File) int {
	fd := -1
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(func(u uintptr) { fd = int(u) })
	}
	return fd
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// Frozen is the supervisor with every loop frozen and its state written.
type Frozen struct {
	Saved Saved
	Fds   []int // every fd the state names, to keep across execve
	sv    *Supervisor
	thaw  chan struct{}
	once  bool
}

// freezeRetries bounds how long a loop may keep saying an input is on its way.
const freezeRetries = 500

// Freeze writes every service's state and leaves its loop frozen, for a re-exec: call it with
// the reaper paused. Thaw undoes it (the re-exec did not happen). A service being upgraded
// refuses (ErrBusy): nothing is frozen then.
func (sv *Supervisor) Freeze(r *system.Reaper) (*Frozen, error) {
	sv.reloadMu.Lock()
	f := &Frozen{sv: sv, thaw: make(chan struct{})}
	for _, s := range sv.services() {
		ans, err := s.freezeOne(r, f.thaw)
		if err != nil {
			f.Thaw()
			return nil, fmt.Errorf("service %s: %w", s.spec().Name, err)
		}
		f.Saved.Services = append(f.Saved.Services, ans.saved)
		f.Fds = append(f.Fds, ans.dups...)
	}
	return f, nil
}

func (s *Service) freezeOne(r *system.Reaper, thaw <-chan struct{}) (freezeAns, error) {
	if s.notify != nil {
		_ = s.notify.StopReading()
	}
	var ans freezeAns
	for i := 0; i < freezeRetries; i++ {
		ch := make(chan freezeAns, 1)
		if !s.post(freezeReq{hold: true, reaper: r, thaw: thaw, reply: ch}) {
			return ans, ErrClosed
		}
		ans = <-ch
		if ans.retry == "" {
			break
		}
		time.Sleep(time.Millisecond) // the input it waits for is being posted
	}
	if ans.err == nil && ans.retry != "" {
		ans.err = fmt.Errorf("not frozen: %s", ans.retry)
	}
	if ans.err != nil && s.notify != nil {
		_ = s.notify.ResumeReading()
		s.startNotifyReader()
	}
	return ans, ans.err
}

// Thaw closes the duplicated fds and lets the loops go on.
func (f *Frozen) Thaw() {
	if f.once {
		return
	}
	f.once = true
	closeAll(f.Fds)
	close(f.thaw)
	f.sv.reloadMu.Unlock()
}

// Snapshot writes every service's state without freezing anything (fd numbers are this
// process's, or -1): the copy a re-exec's trial run must be able to decode.
func (sv *Supervisor) Snapshot() (Saved, error) {
	var out Saved
	for _, s := range sv.services() {
		ch := make(chan freezeAns, 1)
		if !s.post(freezeReq{reply: ch}) {
			return out, ErrClosed
		}
		ans := <-ch
		if ans.err != nil {
			return out, fmt.Errorf("service %s: %w", s.spec().Name, ans.err)
		}
		out.Services = append(out.Services, ans.saved)
	}
	return out, nil
}

// Busy names a service being upgraded ("" for none), from the published statuses.
func (sv *Supervisor) Busy() string {
	for _, s := range sv.services() {
		if len(s.Status().Generations) > 0 {
			return s.spec().Name
		}
	}
	return ""
}
