package services

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/baton-init/baton/config"
)

// exec_start_pre and exec_stop_post (systemd's ExecStartPre= and ExecStopPost=) are two more
// phases of the loop, each running one command at a time as a process of the service (in its
// cgroup, as its user, without its sockets, fd store or notify socket):
//
//   - pPreStart: run() starts exec_start_pre's commands in order, each within start_timeout;
//     when the last one exited 0 the service itself starts. A command that fails (an exit
//     status, a signal, start_timeout) fails the start with that command named in the
//     reason, and the restart policy decides, as for any failed start. A "-" before the path
//     ignores its failure.
//   - pPostStop: once a run ended — stopped, exited, failed to start, or a oneshot done — and
//     before the restart policy or the stop's waiters see it, exec_stop_post's commands run,
//     each within stop_timeout. A failing one (without "-") leaves a service that would be
//     stopped failed, with the reason.
//
// The loop never waits: what follows the commands is kept as afterPost and run by the last
// command's exit.

// cmdState is the loop's record of the commands; only the loop touches it.
type cmdState struct {
	proc        *generation // the command running; nil for none
	idx         int         // its index in exec_start_pre or exec_stop_post
	preDone     bool        // exec_start_pre succeeded: run() starts the service itself now
	postPending bool        // this run's exec_stop_post has not run yet
	afterPost   func()      // what the end of the run does once exec_stop_post is over
	stopAsked   bool        // a stop came while exec_stop_post ran: nothing starts after it
	postErr     error       // a failed exec_stop_post command (without "-")
}

// startPre begins a run with its exec_start_pre commands; false when there are none (or they
// are done), and run() starts the service itself.
func (s *Service) startPre() bool {
	c := &s.st.cmds
	if c.preDone {
		c.preDone = false
		return false
	}
	c.postPending = len(s.spec().ExecStopPost) > 0
	if len(s.spec().ExecStartPre) == 0 {
		return false
	}
	s.st.started = time.Now()
	s.runCmd(pPreStart, 0)
	return true
}

// postThen runs this run's exec_stop_post commands, then next; false when there are none
// (or they ran already), and the caller goes on itself.
func (s *Service) postThen(next func()) bool {
	c := &s.st.cmds
	if !c.postPending {
		return false
	}
	c.postPending = false
	c.afterPost, c.stopAsked, c.postErr = next, false, nil
	s.runCmd(pPostStop, 0)
	return true
}

func (s *Service) cmdList(p phase) (key string, list [][]string, timeout time.Duration) {
	if p == pPreStart {
		return "exec_start_pre", s.spec().ExecStartPre, s.spec().StartTimeout.Duration
	}
	return "exec_stop_post", s.spec().ExecStopPost, s.spec().StopTimeout.Duration
}

// runCmd starts command i of phase p's list.
func (s *Service) runCmd(p phase, i int) {
	c := &s.st.cmds
	key, list, timeout := s.cmdList(p)
	cmd := config.ParseCommand(list[i])
	c.idx = i
	g, err := s.spawnArgv(s.spec(), cmd.Argv, -1, false)
	if err != nil {
		s.enter(p, time.Time{})
		s.cmdFinished(p, cmd, err, false)
		return
	}
	g.starter = false
	c.proc = g
	s.log.Info("running "+key, "command", i+1, "pid", g.pid, "argv", strings.Join(cmd.Argv, " "))
	s.enter(p, g.started.Add(timeout))
}

// preExited and postExited: the command ended (eCmdExit).
func preExited(s *Service, _ request)  { s.cmdExited(pPreStart) }
func postExited(s *Service, _ request) { s.cmdExited(pPostStop) }

func (s *Service) cmdExited(p phase) {
	c := &s.st.cmds
	g := c.proc
	c.proc = nil
	_, list, _ := s.cmdList(p)
	var err error
	switch {
	case g.killedFor != "":
		err = errors.New(g.killedFor)
	case !g.exit.Success():
		err = errors.New(g.exit.String())
	}
	s.cmdFinished(p, config.ParseCommand(list[c.idx]), err, g.killedBy == byTimeout)
}

// cmdFinished decides after a command: the next one, the service itself (pre), what follows
// the run (post), or a failed start.
func (s *Service) cmdFinished(p phase, cmd config.Command, err error, timedOut bool) {
	c := &s.st.cmds
	key, list, _ := s.cmdList(p)
	if err != nil {
		err = fmt.Errorf("%s %s: %w", key, quoteShort(strings.Join(cmd.Argv, " ")), err)
		switch {
		case cmd.IgnoreFailed:
			s.log.Info("command failed (ignored: \"-\")", "err", err)
		case p == pPreStart:
			s.preFailed(err, timedOut)
			return
		default:
			s.log.Error("command failed", "err", err)
			c.postErr = err
		}
	}
	if next := c.idx + 1; next < len(list) {
		s.runCmd(p, next)
		return
	}
	if p == pPreStart {
		c.preDone = true
		s.run()
		return
	}
	s.finishPost()
}

// preFailed: the start failed before the service itself ran.
func (s *Service) preFailed(err error, timedOut bool) {
	kind := endStatus
	if timedOut {
		kind = endTimeout
	}
	s.log.Error("start failed", "err", err)
	s.st.lastErr, s.st.lastEnd = err, howEnded{kind, -1}
	s.outcome(err)
	s.restartOrEnd(true)
}

// finishPost does what the end of the run was going to do, then what was asked meanwhile.
func (s *Service) finishPost() {
	c := &s.st.cmds
	next, stop, postErr := c.afterPost, c.stopAsked, c.postErr
	c.afterPost, c.stopAsked, c.postErr = nil, false, nil
	if next != nil {
		next()
	}
	if postErr != nil && s.st.phase == pDown {
		s.enter(pFailed, time.Time{})
		s.st.lastErr = postErr
	}
	if stop && s.st.phase == pBackoff { // no restart after a stop
		s.enter(pDown, time.Time{})
	}
	if s.st.phase != pDown && s.st.phase != pFailed && s.st.phase != pBackoff {
		return // started again (a restart asked during a stop)
	}
	for _, w := range s.st.stopWaiters {
		s.answer(w, reply{killed: s.st.killed})
	}
	s.st.stopWaiters = nil
	if s.st.startAfter {
		s.st.startAfter = false
		s.st.failures, s.st.backoff = nil, s.spec().RestartDelay.Duration
		s.run()
	}
}

// cmdTimedOut: a command outlived its timeout (start_timeout before, stop_timeout after).
func cmdTimedOut(s *Service, _ request) {
	g := s.st.cmds.proc
	s.st.deadline = time.Time{}
	if g == nil || g.killedFor != "" {
		return
	}
	what, d := "start_timeout", s.spec().StartTimeout
	if s.st.phase == pPostStop {
		what, d = "stop_timeout", s.spec().StopTimeout
	}
	g.killedFor, g.killedBy = fmt.Sprintf("still running after %s %s; killed", what, d), byTimeout
	killGroup(g)
}

// cmdStopped: an exec_start_pre command ended during a stop; the stop goes on (settle).
func cmdStopped(s *Service, _ request) { s.st.cmds.proc = nil }

// stopAfterPost: a stop while exec_stop_post runs waits for it, and cancels a restart.
func stopAfterPost(s *Service, req request) {
	awaitStop(s, req)
	s.st.startAfter = false
	s.st.cmds.stopAsked = true
}

// cmdStatus is what status shows while a command runs.
func (s *Service) cmdStatus() string {
	c := &s.st.cmds
	if c.proc == nil || (s.st.phase != pPreStart && s.st.phase != pPostStop) {
		return ""
	}
	key, list, _ := s.cmdList(s.st.phase)
	return fmt.Sprintf("%s %d/%d (pid %d): %s", key, c.idx+1, len(list), c.proc.pid,
		quoteShort(strings.Join(config.ParseCommand(list[c.idx]).Argv, " ")))
}
