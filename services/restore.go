package services

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/handoff"
	"github.com/baton-init/baton/system"
)

// Restored is a supervisor rebuilt from a state, not running yet: until Start, nothing reads
// a socket or a pipe and no loop runs, so a process image that finds something wrong can still
// hand the same state, untouched, to another (the previous binary).
type Restored struct {
	SV    *Supervisor
	lost  map[*Service][]*generation
	origs []int // fds of the state that were duplicated (the notify sockets): closed by Start
}

// Restore builds the supervisor a previous process image froze (serialize.go), to take its
// services over as they are: no process is started, stopped or signalled. Every generation is
// adopted by the reaper, which must be paused (system.NewPausedReaper) until Start: a process
// that ended in the gap is a zombie still, and is reaped on Resume and handled as an ordinary
// exit.
// logCfg is the config's [log] (the persistent journal is opened again from it, as New does).
func Restore(saved Saved, logCfg config.Log, o Options) (*Restored, error) {
	if err := saved.Check(); err != nil {
		return nil, err
	}
	e := &env{log: o.Log, reaper: o.Reaper, cgroups: o.Cgroups, shim: o.Shim, journal: o.Journal}
	if o.Console != nil {
		e.console = newConsole(o.Console, o.Log)
	}
	if e.shim == "" {
		// The running binary, whatever its path (after a re-exec from a memfd it has none), and
		// not the image's small baton-exec: a binary given to initctl reexec may be newer than
		// the image, and its shim is the one that knows what it passes.
		e.shim = "/proc/self/exe"
	}
	if o.RunDir != "" {
		e.notifyDir = filepath.Join(o.RunDir, "notify")
		if err := os.MkdirAll(e.notifyDir, 0o755); err != nil {
			return nil, fmt.Errorf("notify socket directory: %w", err)
		}
	}
	owns := false
	if e.journal == nil && logCfg.Dir != "" {
		e.journal, owns = OpenJournal(logCfg.Dir, logCfg.Size(), logCfg.KeptBoots(), o.Log), true
	}
	sv := &Supervisor{log: o.Log, env: e, console: e.console, journal: e.journal, ownsJrnl: owns}
	set := &serviceSet{byName: map[string]*Service{}}
	sv.set.Store(set)
	r := &Restored{SV: sv, lost: map[*Service][]*generation{}}
	for _, ss := range saved.Services {
		s, lost, err := restoreService(ss, e)
		if ss.Notify != nil {
			r.origs = append(r.origs, ss.Notify.Fd)
		}
		if err != nil {
			return r, fmt.Errorf("service %s: %w", ss.Spec.Name, err)
		}
		r.lost[s] = lost
		set.list = append(set.list, s)
		set.byName[ss.Spec.Name] = s
	}
	return r, nil
}

// Start runs what Restore built: the loops, the readers of pipes and notify sockets, and the
// exits of processes that are not children any more (reaped by someone else: status lost).
func (r *Restored) Start() {
	closeAll(r.origs)
	r.origs = nil
	for _, s := range r.SV.services() {
		s.stdout.read()
		s.stderr.read()
		if s.notify != nil {
			s.startNotifyReader()
		}
		s.publish()
		s.looping = true
		go s.loop()
		for _, g := range r.lost[s] {
			s.log.Error("a process of the service is not baton's child after the re-exec; handled as ended", "pid", g.pid)
			go s.post(exited{gen: g, exit: system.Exit{Pid: g.pid, Status: unix.WaitStatus(255 << 8)}})
		}
	}
}

// restoreService rebuilds one service, not running yet (Restored.Start).
func restoreService(ss SavedService, e *env) (*Service, []*generation, error) {
	spec := ss.Spec
	s := &Service{Logs: newLogRing(DefaultLogLines), env: e, log: e.log.With("service", spec.Name),
		inputs: make(chan input), quit: make(chan struct{}), loopDone: make(chan struct{})}
	s.specp.Store(&spec)
	s.Logs.restore(ss.Logs, ss.LogNext)
	if j := e.journal; j != nil {
		s.Logs.sink = func(l LogLine) { j.add(spec.Name, l) }
	}
	s.stdout = restorePipe(spec.Name, "stdout", ss.Stdout, s.Logs, e.console)
	s.stderr = restorePipe(spec.Name, "stderr", ss.Stderr, s.Logs, e.console)
	fail := func(err error) (*Service, []*generation, error) { return s, nil, err }
	for _, h := range ss.Held {
		for _, so := range spec.Socket {
			if so.Name != h.Name {
				continue
			}
			l, err := config.ParseListen(so.Listen)
			if err != nil {
				return fail(err)
			}
			s.held = append(s.held, &handoff.Held{Spec: so, Listen: l, Fd: h.Fd})
		}
	}
	if ss.BindErr != "" {
		s.bindErr = errors.New(ss.BindErr)
	}
	var err error
	if s.store, err = handoff.NewFDStore(spec.FDStoreMax, s.log); err != nil {
		return fail(err)
	}
	if err := s.store.Restore(ss.Store); err != nil {
		s.log.Warn("fd store: not every stored fd was taken over", "err", err)
	}
	if n := ss.Notify; n != nil {
		if s.notify, err = handoff.NotifyFromFd(n.Path, n.Fd); err != nil {
			return fail(err)
		}
	}
	for _, c := range ss.Carried {
		if c.Fd >= 0 { // a snapshot's (a trial run) has none
			s.carried.conns = append(s.carried.conns, Carried{Fd: c.Fd, State: c.State})
		}
	}
	s.st = restoreState(ss)
	var lost []*generation
	for _, g := range s.st.gens {
		exits, err := e.reaper.Adopt(g.pid)
		if err != nil {
			lost = append(lost, g)
			continue
		}
		s.watchExit(g, exits)
	}
	return s, lost, nil
}

func restorePipe(name, stream string, sp SavedPipe, ring *LogRing, con *console) *logPipe {
	p := &logPipe{r: os.NewFile(uintptr(sp.R), name+"-"+stream+"-r"), w: os.NewFile(uintptr(sp.W), name+"-"+stream+"-w"),
		name: name, stream: stream, ring: ring, con: con}
	return p
}

func restoreState(ss SavedService) state {
	from := system.FromBoottime
	st := newState(ss.Spec)
	for p := phase(0); p < nPhases; p++ {
		if phaseNames[p] == ss.Phase {
			st.phase = p
		}
	}
	st.deadline, st.wdInterval, st.backoff = from(ss.Deadline), time.Duration(ss.WdInterval), time.Duration(ss.Backoff)
	for _, t := range ss.Failures {
		st.failures = append(st.failures, from(t))
	}
	st.startAfter, st.nextSpec, st.flushStore, st.killed = ss.StartAfter, ss.NextSpec, ss.FlushStore, ss.Killed
	if ss.FailAfterStop != "" {
		st.failAfterStop = errors.New(ss.FailAfterStop)
	}
	st.selfStopping, st.cgroup = ss.SelfStopping, ss.Cgroup
	st.started, st.readyAt, st.firstUp, st.firstRdy = from(ss.Started), from(ss.ReadyAt), from(ss.FirstUp), from(ss.FirstReady)
	st.completed, st.restarts, st.upgrades = ss.Completed, ss.Restarts, ss.Upgrades
	if e := ss.LastExit; e != nil {
		st.lastExit = &system.Exit{Pid: e.Pid, Status: unix.WaitStatus(e.Status)}
	}
	st.lastEnd = howEnded{kind: endKind(ss.LastEndKind), status: ss.LastEndStatus}
	if ss.LastErr != "" {
		st.lastErr = errors.New(ss.LastErr)
	}
	st.statusMsg, st.mainPid, st.notifyDropped, st.notifyLate = ss.StatusMsg, ss.MainPid, ss.NotifyDropped, ss.NotifyLate
	st.cmds.postPending = ss.PostPending
	for i, sg := range ss.Gens {
		g := &generation{pid: sg.Pid, pgid: sg.Pgid, starter: sg.Starter, adopted: sg.Adopted, exec: sg.Exec,
			started: from(sg.Started), ctl: sg.Ctl, killedFor: sg.KilledFor, killedBy: killCause(sg.KilledBy)}
		st.gens = append(st.gens, g)
		if i == ss.Cur {
			st.cur = g
		}
	}
	return st
}

// restore puts the lines a previous process image kept back.
func (r *LogRing) restore(lines []LogLine, next uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(lines) > cap(r.lines) {
		lines = lines[len(lines)-cap(r.lines):]
	}
	r.lines = append(r.lines[:0], lines...)
	r.start = 0
	if next > r.next {
		r.next = next
	}
}

// Limits of a state a decoder accepts: far above what a real appliance writes, low enough
// that a corrupt state cannot make the restore allocate without bound.
const (
	maxSavedServices = 4096
	maxSavedGens     = 64
	maxSavedFds      = 1 << 16
)

// Check validates a state before anything is taken over: every field in range, every fd a
// number the state names once, every pid one a process could have.
func (sv Saved) Check() error {
	if len(sv.Services) > maxSavedServices {
		return fmt.Errorf("state: %d services (at most %d)", len(sv.Services), maxSavedServices)
	}
	names := map[string]bool{}
	fds := map[int]string{}
	for i, ss := range sv.Services {
		where := fmt.Sprintf("state: service %d (%q)", i, ss.Spec.Name)
		if err := ss.check(fds); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if names[ss.Spec.Name] {
			return fmt.Errorf("%s: named twice", where)
		}
		names[ss.Spec.Name] = true
	}
	return nil
}

func (ss SavedService) check(fds map[int]string) error {
	if ss.Spec.Name == "" || len(ss.Spec.Exec) == 0 {
		return errors.New("no name or no exec")
	}
	known := false
	for p := phase(0); p < nPhases; p++ {
		known = known || phaseNames[p] == ss.Phase
	}
	if !known {
		return fmt.Errorf("unknown phase %q", ss.Phase)
	}
	if len(ss.Gens) > maxSavedGens || ss.Cur < -1 || ss.Cur >= len(ss.Gens) {
		return fmt.Errorf("%d generations, main one %d", len(ss.Gens), ss.Cur)
	}
	if len(ss.Logs) > 4*DefaultLogLines || len(ss.Failures) > 1<<12 {
		return errors.New("too many log lines or failures")
	}
	if ss.LastEndKind < 0 || ss.LastEndKind > int(endNoStart) || ss.Backoff < 0 || ss.WdInterval < 0 {
		return errors.New("restart state out of range")
	}
	// An fd of the state: -1 for none where allowed, else above 2 and named once.
	claim := func(what string, fd int, optional bool) error {
		if fd == -1 && optional {
			return nil
		}
		if fd < 3 || fd > maxSavedFds {
			return fmt.Errorf("%s: fd %d out of range", what, fd)
		}
		if other, dup := fds[fd]; dup {
			return fmt.Errorf("%s: fd %d is also %s", what, fd, other)
		}
		fds[fd] = what
		return nil
	}
	for _, g := range ss.Gens {
		if g.Pid <= 1 || g.Pgid < 0 || g.KilledBy < 0 || g.KilledBy > int(byWatchdog) {
			return fmt.Errorf("generation pid %d pgid %d: out of range", g.Pid, g.Pgid)
		}
		if err := claim(fmt.Sprintf("control channel of pid %d", g.Pid), g.Ctl, true); err != nil {
			return err
		}
	}
	for _, h := range ss.Held {
		found := false
		for _, so := range ss.Spec.Socket {
			found = found || so.Name == h.Name
		}
		if !found {
			return fmt.Errorf("held socket %q is not in the config", h.Name)
		}
		if err := claim("socket "+h.Name, h.Fd, false); err != nil {
			return err
		}
	}
	if len(ss.Store) > maxSavedFds {
		return errors.New("fd store too large")
	}
	for _, e := range ss.Store {
		if err := claim("stored fd "+e.Name, e.Fd, true); err != nil {
			return err
		}
	}
	if len(ss.Carried) > maxSavedFds {
		return errors.New("too many carried connections")
	}
	for _, c := range ss.Carried {
		if len(c.State) > maxCarryState {
			return fmt.Errorf("carried connection's state: %d bytes (at most %d)", len(c.State), maxCarryState)
		}
		if err := claim("carried connection", c.Fd, true); err != nil {
			return err
		}
	}
	if n := ss.Notify; n != nil {
		if !filepath.IsAbs(n.Path) {
			return fmt.Errorf("notify socket path %q", n.Path)
		}
		if err := claim("notify socket", n.Fd, true); err != nil {
			return err
		}
	}
	for _, p := range []struct {
		what string
		fd   int
	}{{"stdout read end", ss.Stdout.R}, {"stdout write end", ss.Stdout.W}, {"stderr read end", ss.Stderr.R}, {"stderr write end", ss.Stderr.W}} {
		if err := claim(p.what, p.fd, false); err != nil {
			return err
		}
	}
	return nil
}

// Fds lists every fd the state names.
func (sv Saved) Fds() []int {
	var out []int
	add := func(fd int) {
		if fd >= 0 {
			out = append(out, fd)
		}
	}
	for _, ss := range sv.Services {
		for _, g := range ss.Gens {
			add(g.Ctl)
		}
		for _, h := range ss.Held {
			add(h.Fd)
		}
		for _, e := range ss.Store {
			add(e.Fd)
		}
		for _, c := range ss.Carried {
			add(c.Fd)
		}
		if ss.Notify != nil {
			add(ss.Notify.Fd)
		}
		add(ss.Stdout.R)
		add(ss.Stdout.W)
		add(ss.Stderr.R)
		add(ss.Stderr.W)
	}
	return out
}
