package services

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/handoff"
	"github.com/baton-init/baton/system"
)

// run is an activation's loop: run the program, decide whether to restart, back off.
func (s *Service) run(act *activation) {
	defer close(act.done)
	defer system.Recover(s.log, "service "+s.Spec.Name)
	backoff := s.Spec.RestartDelay.Duration
	for {
		exit, err := s.runOnce(act)
		s.mu.Lock()
		if act.stopReq {
			s.mu.Unlock()
			return
		}
		failed := err != nil || !exit.Success()
		if !s.shouldRestart(failed) {
			if failed {
				s.setState(Failed)
			} else {
				s.setState(Stopped)
			}
			s.mu.Unlock()
			return
		}
		if time.Since(s.started) >= s.Spec.RestartWindow.Duration {
			backoff = s.Spec.RestartDelay.Duration // it stayed up a while: start over
		}
		if s.overRestartLimit() {
			s.lastErr = fmt.Errorf("restarted more than %d times in %s; giving up (initctl start %s to try again)",
				s.Spec.RestartLimit, s.Spec.RestartWindow, s.Spec.Name)
			s.log.Error("restart limit reached", "limit", s.Spec.RestartLimit, "window", s.Spec.RestartWindow)
			s.setState(Failed)
			s.mu.Unlock()
			return
		}
		s.setState(Starting)
		s.mu.Unlock()
		s.log.Info("restarting", "in", backoff)
		if !s.sleepUnlessStopped(act, backoff) {
			return
		}
		backoff = min(backoff*2, s.Spec.RestartDelayMax.Duration)
		s.mu.Lock()
		s.restarts++
		s.cond.Broadcast()
		s.mu.Unlock()
	}
}

func (s *Service) shouldRestart(failed bool) bool {
	switch s.Spec.Restart {
	case config.RestartAlways:
		return true
	case config.RestartOnFailure:
		return failed
	default:
		return false
	}
}

// overRestartLimit records a restart and reports whether there were more than the limit
// within the window. s.mu must be held.
func (s *Service) overRestartLimit() bool {
	now := time.Now()
	s.failures = append(s.failures, now)
	kept := s.failures[:0]
	for _, t := range s.failures {
		if now.Sub(t) < s.Spec.RestartWindow.Duration {
			kept = append(kept, t)
		}
	}
	s.failures = kept
	return s.Spec.RestartLimit > 0 && len(kept) > s.Spec.RestartLimit
}

// runOnce starts the program and follows it until the current generation ends: through its
// readiness deadline, its watchdog, and upgrades that replace it with a new generation.
func (s *Service) runOnce(act *activation) (system.Exit, error) {
	id, idErr := lookupIdentity(s.Spec)
	s.mu.Lock()
	if act.stopReq {
		// Checked under the lock Stop takes, so a stop never misses a process started after it.
		s.mu.Unlock()
		return system.Exit{}, errStopping
	}
	s.setState(Starting)
	gen, err := s.spawnLocked(id, idErr, s.Spec.Exec[0], -1)
	if err != nil {
		s.lastErr = err
		s.setState(Failed) // until the loop decides to try again
		s.recordOutcome(err)
		s.mu.Unlock()
		s.log.Error("start failed", "err", err)
		return system.Exit{}, err
	}
	s.cur, s.pid, s.started, s.lastErr, s.runDecided = gen, gen.pid, gen.started, nil, false
	s.mainPid, s.reloading, s.statusMsg = 0, false, ""
	s.startDeadline = gen.started.Add(s.Spec.StartTimeout.Duration)
	if s.Spec.Ready == config.ReadyStarted {
		s.markReadyLocked()
	}
	s.armWatchdogLocked()
	s.mu.Unlock()
	s.log.Info("started", "pid", gen.pid)

	for {
		s.mu.Lock()
		cur, upgrading, deadline := s.cur, s.next != nil, s.deadlineLocked()
		s.mu.Unlock()
		if cur.ended() && (!upgrading || act.stopReq) {
			return s.endRun(cur, act), nil
		}
		done := cur.done
		if cur.ended() {
			done = nil // the old version died during an upgrade: wait for its outcome
		}
		var timer <-chan time.Time
		var t *time.Timer
		if !deadline.IsZero() {
			t = time.NewTimer(time.Until(deadline))
			timer = t.C
		}
		select {
		case <-done:
		case <-s.poke:
		case <-timer:
			s.onDeadline(cur)
		}
		if t != nil {
			t.Stop()
		}
	}
}

// deadlineLocked is the next moment the run loop must look: readiness or watchdog.
func (s *Service) deadlineLocked() time.Time {
	switch {
	case s.state == Starting && s.Spec.Ready == config.ReadyNotify && !s.runDecided:
		return s.startDeadline
	case s.state == Running && s.wdInterval > 0:
		return s.wdDeadline
	}
	return time.Time{}
}

// onDeadline acts on a missed readiness or watchdog deadline of generation g.
func (s *Service) onDeadline(g *generation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	switch {
	case s.cur != g:
		return
	case s.state == Starting && s.Spec.Ready == config.ReadyNotify && !s.runDecided && !now.Before(s.startDeadline):
		err := fmt.Errorf("no READY=1 within start_timeout %s; killed", s.Spec.StartTimeout)
		s.log.Error("not ready in time", "start_timeout", s.Spec.StartTimeout)
		s.lastErr = err
		s.recordOutcome(err)
	case s.state == Running && s.wdInterval > 0 && !now.Before(s.wdDeadline):
		s.lastErr = fmt.Errorf("watchdog: no WATCHDOG=1 for %s; killed", s.wdInterval)
		s.log.Error("watchdog timeout", "interval", s.wdInterval)
		s.wdDeadline = time.Time{}
	default:
		return
	}
	go s.killGroup(g.pid)
}

func (s *Service) armWatchdogLocked() {
	if s.wdInterval > 0 {
		s.wdDeadline = time.Now().Add(s.wdInterval)
	}
}

// endRun records how generation g ended; what it left behind is killed, or a restart would
// find it.
func (s *Service) endRun(g *generation, act *activation) system.Exit {
	s.killGroup(g.pid)
	s.killCgroup()
	closeFd(&g.ctl)
	s.mu.Lock()
	s.lastExit = &g.exit
	s.pid, s.cur = 0, nil
	if !s.runDecided {
		s.recordOutcome(fmt.Errorf("exited before it was ready: %s", g.exit))
	}
	if s.lastErr == nil && !g.exit.Success() && !act.stopReq {
		s.lastErr = fmt.Errorf("%s", g.exit)
	}
	stopping := act.stopReq
	s.mu.Unlock()
	if !stopping {
		s.log.Info("exited", "how", g.exit.String())
	}
	return g.exit
}

// spawnLocked starts one process of the service: execPath with the service's arguments, its
// held sockets and stored fds as fds 3… (listen-fd protocol), a control channel, and, for an
// upgrade, the receiving end of the handoff channel. s.mu must be held.
func (s *Service) spawnLocked(id identity, idErr error, execPath string, handoffFd int) (*generation, error) {
	if idErr != nil {
		return nil, fmt.Errorf("start %s: %w", s.Spec.Name, idErr)
	}
	if s.bindErr != nil {
		return nil, fmt.Errorf("start %s: %w", s.Spec.Name, s.bindErr)
	}
	if err := unix.Access(execPath, unix.X_OK); err != nil {
		return nil, fmt.Errorf("start %s: %w", execPath, err)
	}
	passed := s.passedFiles()
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=" + id.home, "USER=" + id.name, "LOGNAME=" + id.name}
	if s.notify != nil {
		env = append(env, "NOTIFY_SOCKET="+s.notify.Path)
	}
	env = append(env, s.Spec.Env...)
	env = append(env, handoff.PassEnv(passed)...)

	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Spec.Name, err)
	}
	defer devnull.Close()
	fds := []uintptr{devnull.Fd(), s.stdout.w.Fd(), s.stderr.w.Fd()}
	for _, f := range passed {
		fds = append(fds, uintptr(f.Fd))
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("start %s: control channel: %w", s.Spec.Name, err)
	}
	defer unix.Close(pair[1])
	env = append(env, handoff.EnvCtlFD+"="+strconv.Itoa(len(fds)))
	fds = append(fds, uintptr(pair[1]))
	if handoffFd >= 0 {
		env = append(env, handoff.EnvHandoffFD+"="+strconv.Itoa(len(fds)))
		fds = append(fds, uintptr(handoffFd))
	}

	path, argv := execPath, append([]string{execPath}, s.Spec.Exec[1:]...)
	if len(passed) > 0 || s.wdInterval > 0 {
		// LISTEN_PID must be the service's own pid: the shim sets it, then execs the service.
		path, argv = s.env.shim, append([]string{"baton-exec"}, argv...)
		if len(passed) > 0 {
			env = append(env, "LISTEN_PID=0")
		}
	}
	if s.wdInterval > 0 {
		env = append(env, "WATCHDOG_USEC="+strconv.FormatInt(s.wdInterval.Microseconds(), 10), "WATCHDOG_PID=0")
	}
	attr := &syscall.ProcAttr{Dir: s.Spec.Dir, Env: env, Files: fds,
		// A session of its own (so a process group of its own, and no controlling terminal):
		// a stop reaches the children it started too.
		Sys: &syscall.SysProcAttr{Setsid: true, Credential: id.cred}}
	if attr.Dir == "" {
		attr.Dir = "/"
	}
	if s.env.cgroups != nil {
		dir, f, err := s.env.cgroups.prepare(s.Spec)
		if err != nil {
			unix.Close(pair[0])
			return nil, err
		}
		defer f.Close()
		s.cgroup = dir
		attr.Sys.UseCgroupFD, attr.Sys.CgroupFD = true, int(f.Fd())
	}
	exited, pid, err := s.env.reaper.StartFunc(func() (int, error) { return syscall.ForkExec(path, argv, attr) })
	if err != nil {
		unix.Close(pair[0])
		return nil, fmt.Errorf("start %s: %w", execPath, err)
	}
	g := &generation{pid: pid, started: time.Now(), done: make(chan struct{}), ctl: pair[0]}
	if s.firstUp.IsZero() {
		s.firstUp = g.started
	}
	go func() {
		g.exit = <-exited
		close(g.done)
		s.wake()
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	}()
	return g, nil
}

// passedFiles are the fds a new process gets at 3…: the held sockets, then the fd store.
func (s *Service) passedFiles() []handoff.NamedFile {
	var out []handoff.NamedFile
	for _, h := range s.held {
		out = append(out, handoff.NamedFile{Name: h.Spec.Name, Fd: h.Fd})
	}
	return append(out, s.store.Files()...)
}

// sleepUnlessStopped waits d, or less if a stop is requested; it reports whether to go on.
func (s *Service) sleepUnlessStopped(act *activation, d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waitLocked(time.Now().Add(d), func() bool { return act.stopReq })
	return !act.stopReq
}

func closeFd(fd *int) {
	if *fd >= 0 {
		unix.Close(*fd)
		*fd = -1
	}
}
