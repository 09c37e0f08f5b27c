package services

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/system"
)

// Forking and oneshot services (systemd's Type=forking and Type=oneshot) are ready when the
// process baton started (the starter) ends, not when it says READY=1:
//
//   - oneshot: exit 0 (or a success_exit_status) is success; the service is then stopped, or
//     running without a process with remain_after_exit.
//   - forking: exit 0 means the daemon it forked runs; its pid is read from pid_file. The
//     daemon called setsid, so it is in neither the starter's process group nor, outside PID 1,
//     any cgroup baton could use: baton follows it by pid instead. Its parent exited, so the
//     kernel re-parented it to baton (PID 1 or the subreaper), whose reaper can wait for it
//     (Reaper.Adopt). It becomes the main generation: status shows it, stop and reload signal
//     it and its process group, and its exit is the service's exit.
//
// A daemon writes its pid file after its parent exited (nginx does), so the file may be
// missing or stale for a moment: pPidWait polls it until it names a child of baton, within
// start_timeout.

// pidPoll is how often pPidWait reads the pid file.
const pidPoll = 10 * time.Millisecond

// starterExited: the started process of a forking or oneshot service ended while starting.
func starterExited(s *Service, _ request) {
	g := s.st.cur
	forking := s.spec().Type == config.TypeForking
	if forking && (g.killedFor != "" || !g.exit.Success()) {
		killGroup(g) // reaped spared them: a daemon may share the starter's group or cgroup
		s.killCgroup()
		s.killPidFileDaemon()
	}
	if g.killedFor != "" || !s.exitOK(g.exit) {
		exitStarting(s, request{})
		return
	}
	s.st.cur = nil
	if forking {
		s.log.Info("started process exited; reading pid_file", "pid_file", s.spec().PIDFile)
		pollPidFile(s, request{})
		return
	}
	s.st.lastExit = &g.exit
	s.st.completed = true
	s.log.Info("done", "after", time.Since(s.st.started).Round(time.Millisecond))
	if s.spec().RemainAfterExit {
		s.markReady() // running, with no process
		return
	}
	s.st.readyAt = time.Now()
	if s.st.firstRdy.IsZero() {
		s.st.firstRdy = s.st.readyAt
	}
	s.outcome(nil)
	if !s.postThen(func() { s.enter(pDown, time.Time{}) }) { // exec_stop_post first
		s.enter(pDown, time.Time{})
	}
}

// pollPidFile adopts the daemon pid_file names, or looks again shortly, or gives up after
// start_timeout.
func pollPidFile(s *Service, _ request) {
	g, err := s.adoptMain()
	if err == nil {
		s.markReady()
		s.log.Info("ready", "main_pid", g.pid, "after", time.Since(s.st.started).Round(time.Millisecond))
		return
	}
	if time.Since(s.st.started) < s.spec().StartTimeout.Duration {
		s.enter(pPidWait, time.Now().Add(pidPoll))
		return
	}
	err = fmt.Errorf("no running daemon in pid_file within start_timeout %s: %w", s.spec().StartTimeout, err)
	s.log.Error("not ready in time", "err", err)
	s.killCgroup()
	s.killPidFileDaemon()
	s.st.lastErr, s.st.lastEnd = err, howEnded{endTimeout, -1}
	s.outcome(err)
	s.restartOrEnd(true)
}

// adoptMain makes the process pid_file names the main generation, if it is baton's child.
func (s *Service) adoptMain() (*generation, error) {
	path := s.spec().PIDFile
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	pid, err := strconv.Atoi(string(bytes.TrimSpace(line)))
	if err != nil || pid <= 1 {
		return nil, fmt.Errorf("pid_file %s: %s is not a pid", path, quoteShort(string(line)))
	}
	exits, err := s.env.reaper.Adopt(pid)
	if err != nil {
		return nil, fmt.Errorf("pid_file %s: %w", path, err)
	}
	g := &generation{pid: pid, exec: s.spec().Exec[0], started: time.Now(), ctl: -1, adopted: true}
	g.followGroup()
	s.st.gens = append(s.st.gens, g)
	s.st.cur = g
	s.watchExit(g, exits)
	return g, nil
}

// followGroup records an adopted daemon's process group (nginx's workers are there), read
// again before each signal: a daemon may call setsid after writing its pid file (Debian's
// nginx does), and the group it had when adopted is then gone. Never baton's own group: a
// daemon started without setsid stays in the starter's.
func (g *generation) followGroup() {
	if st, err := system.ReadProcStat(g.pid); err == nil && st.State != 'Z' && st.Pgrp > 1 && st.Pgrp != unix.Getpgrp() {
		g.pgid = st.Pgrp
	}
}

// stopPidWait: a stop while the pid file is awaited: the daemon, if it can be found by now,
// is stopped as the main generation; else whatever is in the cgroup is killed.
func stopPidWait(s *Service, req request) {
	if _, err := s.adoptMain(); err != nil {
		s.log.Warn("stopped before pid_file named the daemon", "err", err)
		s.killCgroup()
		s.killPidFileDaemon()
	}
	beginStop(s, req)
}

func restartPidWait(s *Service, req request) {
	stopPidWait(s, request{op: opStop})
	startLater(s, req)
}

// starterStopped: the started process of a forking service ended during a stop; its daemon
// may already run detached, so it is looked for once and stopped too.
func starterStopped(s *Service, _ request) {
	g := s.st.cur
	s.endCur()
	if s.spec().Type != config.TypeForking {
		return
	}
	killGroup(g)
	if d, err := s.adoptMain(); err == nil {
		sig, _ := config.SignalByName(s.spec().StopSignal)
		s.signalTree(d, sig, true)
		return
	}
	if len(s.st.gens) == 0 {
		s.killCgroup()
	}
}

// killPidFileDaemon SIGKILLs the daemon pid_file names when the start failed: without a
// cgroup nothing else reaches it (it left the starter's group). Only a child of baton.
func (s *Service) killPidFileDaemon() {
	b, err := os.ReadFile(s.spec().PIDFile)
	if err != nil {
		return
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	pid, err := strconv.Atoi(string(bytes.TrimSpace(line)))
	if err != nil || pid <= 1 {
		return
	}
	if st, err := system.ReadProcStat(pid); err == nil && st.PPid == os.Getpid() && st.State != 'Z' {
		d := &generation{pid: pid, adopted: true}
		d.followGroup()
		s.log.Warn("killing the daemon of a failed start", "pid", pid)
		killGroup(d)
	}
}

// removePidFile removes a forking service's pid file once its daemon is gone, if it still
// names that daemon, as systemd does: a stale file would name a reused pid at the next start.
func (s *Service) removePidFile(pid int) {
	path := s.spec().PIDFile
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	if string(bytes.TrimSpace(line)) == strconv.Itoa(pid) {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("remove pid_file", "err", err)
		}
	}
}

// exitOK reports an exit that counts as success: status 0 or one of success_exit_status.
func (s *Service) exitOK(e system.Exit) bool {
	return e.Success() || (e.Status.Exited() && slices.Contains(s.spec().SuccessExitStatus, e.Status.ExitStatus()))
}
