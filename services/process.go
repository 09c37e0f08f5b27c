package services

import (
	"errors"
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

// spawn starts one process of the service as spec describes it: execPath with its arguments,
// exactly
// these fds — 0 /dev/null, 1 and 2 its log pipes, its held sockets and stored fds from 3 on
// (listen-fd protocol), the control channel, and, for an upgrade, the receiving end of the
// handoff channel — and a goroutine that posts its exit to the loop.
func (s *Service) spawn(spec *config.Service, execPath string, handoffFd int) (*generation, error) {
	return s.spawnArgv(spec, append([]string{execPath}, spec.Exec[1:]...), handoffFd, true)
}

// spawnArgv is spawn of any argv; a process that is not the service itself (main false: an
// exec_start_pre or exec_stop_post command) gets neither its sockets, its stored fds, its
// notify socket nor its watchdog.
func (s *Service) spawnArgv(spec *config.Service, argv []string, handoffFd int, main bool) (*generation, error) {
	execPath := argv[0]
	id, err := lookupIdentityAndDirs(*spec)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	if s.bindErr != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, s.bindErr)
	}
	if err := unix.Access(execPath, unix.X_OK); err != nil {
		return nil, fmt.Errorf("start %s: %w", execPath, err)
	}
	var passed []handoff.NamedFile
	if main {
		stored := s.store.Files() // copies, ours to close once the child has its own
		defer func() {
			for _, f := range stored {
				unix.Close(f.Fd)
			}
		}()
		for _, h := range s.held {
			passed = append(passed, handoff.NamedFile{Name: h.Spec.Name, Fd: h.Fd})
		}
		passed = append(passed, stored...)
	}

	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=" + id.home, "USER=" + id.name, "LOGNAME=" + id.name}
	if s.notify != nil && main {
		env = append(env, "NOTIFY_SOCKET="+s.notify.Path)
	}
	env = append(env, spec.Env...)
	fileEnv, err := readEnvFiles(spec)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	env = mergeEnv(append(env, fileEnv...))
	env = append(env, handoff.PassEnv(passed)...)

	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	defer devnull.Close()
	fds := []uintptr{devnull.Fd(), s.stdout.w.Fd(), s.stderr.w.Fd()}
	for _, f := range passed {
		fds = append(fds, uintptr(f.Fd))
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("start %s: control channel: %w", spec.Name, err)
	}
	defer unix.Close(pair[1])
	env = append(env, handoff.EnvCtlFD+"="+strconv.Itoa(len(fds)))
	fds = append(fds, uintptr(pair[1]))
	if handoffFd >= 0 {
		env = append(env, handoff.EnvHandoffFD+"="+strconv.Itoa(len(fds)))
		fds = append(fds, uintptr(handoffFd))
	}

	path := execPath
	cred := id.cred
	watchdog := main && s.st.wdInterval > 0
	if len(passed) > 0 || watchdog || spec.NeedsShim() {
		// LISTEN_PID must be the service's own pid, limits and the umask are set between
		// fork and exec: the shim does it, then execs the service.
		path, argv = s.env.shim, append([]string{"baton-exec"}, argv...)
		if spec.NeedsShim() {
			env, cred = append(env, shimEnv(spec, id)...), nil
		}
		if len(passed) > 0 {
			env = append(env, "LISTEN_PID=0")
		}
	}
	if watchdog {
		env = append(env, "WATCHDOG_USEC="+strconv.FormatInt(s.st.wdInterval.Microseconds(), 10), "WATCHDOG_PID=0")
	}
	attr := &syscall.ProcAttr{Dir: spec.Dir, Env: env, Files: fds,
		// A session of its own (so a process group of its own, and no controlling terminal):
		// a stop reaches the children it started too.
		Sys: &syscall.SysProcAttr{Setsid: true, Credential: cred}}
	if attr.Dir == "" {
		attr.Dir = "/"
	}
	if s.env.cgroups != nil {
		dir, f, err := s.env.cgroups.prepare(*spec)
		if err != nil {
			unix.Close(pair[0])
			return nil, err
		}
		defer f.Close()
		s.st.cgroup = dir
		attr.Sys.UseCgroupFD, attr.Sys.CgroupFD = true, int(f.Fd())
	}
	exits, pid, err := s.env.reaper.StartFunc(func() (int, error) { return syscall.ForkExec(path, argv, attr) })
	if err != nil {
		unix.Close(pair[0])
		return nil, fmt.Errorf("start %s: %w", execPath, err)
	}
	g := &generation{pid: pid, pgid: pid, exec: execPath, started: time.Now(), ctl: pair[0],
		starter: spec.Type == config.TypeForking || spec.Type == config.TypeOneshot}
	s.st.gens = append(s.st.gens, g)
	if s.st.firstUp.IsZero() && main {
		s.st.firstUp = g.started
	}
	s.watchExit(g, exits)
	return g, nil
}

// watchExit posts a generation's exit to the loop.
func (s *Service) watchExit(g *generation, exits <-chan system.Exit) {
	go func() {
		defer system.Recover(s.log, "exit watcher "+s.spec().Name)
		s.post(exited{gen: g, exit: <-exits})
	}()
}

// signalTree sends sig to a generation's process group and, when all of the service is meant
// (a stop, not an upgrade's drain), to everything in its cgroup, which also holds processes
// that left the group.
func (s *Service) signalTree(g *generation, sig unix.Signal, cgroupToo bool) {
	if err := g.signal(sig); err != nil && !errors.Is(err, unix.ESRCH) {
		s.log.Warn("signal failed", "pid", g.pid, "signal", unix.SignalName(sig), "err", err)
	}
	_ = g.signal(unix.SIGCONT) // a stopped process cannot act on the signal
	if s.st.cgroup != "" && cgroupToo {
		for _, p := range cgroupProcs(s.st.cgroup) {
			_ = unix.Kill(p, sig)
			_ = unix.Kill(p, unix.SIGCONT)
		}
	}
}

// signal sends sig to a generation's process group and, while it is not reaped (its pid could
// be another process's afterwards), to its main process, which an adopted daemon may have
// outside the group.
func (g *generation) signal(sig unix.Signal) error {
	var err error
	if g.adopted && !g.ended {
		g.followGroup()
	}
	if g.pgid > 0 {
		err = unix.Kill(-g.pgid, sig)
	}
	if g.adopted && g.pgid != g.pid {
		// The group it leads, if it made one after it was last looked at. Safe once it is
		// reaped too: the kernel does not reuse a pid while a group of that id exists.
		_ = unix.Kill(-g.pid, sig)
	}
	if g.pgid != g.pid && !g.ended {
		err = unix.Kill(g.pid, sig)
	}
	return err
}

// killGroup SIGKILLs a generation's process group (and its main process, until reaped).
func killGroup(g *generation) { _ = g.signal(unix.SIGKILL) }

// killCgroup SIGKILLs everything in the service's cgroup: only when all of it must go.
func (s *Service) killCgroup() {
	dir := s.st.cgroup
	if dir == "" {
		return
	}
	if err := cgroupKill(dir); err != nil && len(cgroupProcs(dir)) > 0 {
		s.log.Warn("cgroup.kill failed", "cgroup", dir, "err", err)
	}
}

func closeFd(fd *int) {
	if *fd >= 0 {
		unix.Close(*fd)
		*fd = -1
	}
}

// ErrUnknown is returned for a service name that is not configured.
var ErrUnknown = errors.New("unknown service")

func unknown(name string) error { return fmt.Errorf("%w %q", ErrUnknown, name) }
