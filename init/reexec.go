package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/reexec"
	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/system"
)

// initctl reexec: baton replaces its own process image and keeps every service.
//
//  1. Prepare (before the API answers): the running binary is copied into a memfd (the
//     fail-safe), an uploaded one is checked (digest, static executable for this machine),
//     and the target runs as a child in check mode on a copy of the state: it must start,
//     decode it and answer "ok" within trialTimeout.
//  2. Commit (after the 202 is out): the reaper is paused, every service loop freezes and
//     writes its state, the control listeners stop accepting, and the state goes into a memfd;
//     the fds it names survive execve, and the target is executed with the same argv.
//  3. The new image (restoreEarly, then its mode's main) decodes the state, rebuilds the
//     supervisor and the API without starting, stopping or signalling anything, resumes the
//     reaper (exits of the gap are reaped now) and records the re-exec as done. If it cannot
//     — a state it does not read, a panic — it executes the previous binary from its memfd
//     with the same state and the reason, which restores and records the re-exec as failed.
//
// An execve that fails leaves the old image running: everything is thawed.

// version is set at build time (-ldflags '-X main.version=…'); else the module's VCS data.
var version string

// reexecFault makes a test binary fail one step on purpose (-ldflags '-X
// main.reexecFault=…'): "exit" (exits at once, whatever it is asked), "trial" (refuses the
// state in check mode), "panic-restore" (panics while restoring), "version" (reads and writes
// another state version), "slow-restore" (waits a second before restoring). Empty in every
// real build.
var reexecFault string

// Environment of a re-exec'd image, removed before anything else reads the environment.
const (
	envState  = "BATON_REEXEC_STATE"  // fd of the state's memfd
	envPrev   = "BATON_REEXEC_PREV"   // fd of the previous binary's memfd
	envFailed = "BATON_REEXEC_FAILED" // set when the new binary gave up: why
	checkName = "baton-reexec-check"  // argv[0] of the trial run
)

const trialTimeout = 15 * time.Second

func init() {
	if reexecFault == "version" {
		reexec.Version = 99
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v = s.Value[:12]
			}
		}
		if v != "" {
			return v
		}
	}
	return "dev"
}

// reexecer is a process image's side of initctl reexec and initctl version.
type reexecer struct {
	log     *slog.Logger
	mode    string // pid1 | subreaper
	reaper  *system.Reaper
	sv      *services.Supervisor
	change  *changeGuard                    // held from Prepare until the execve (or the thaw after a failed one)
	busy    func() error                    // why not now (a pending shutdown, an update on trial); nil: nothing
	machine func() (json.RawMessage, error) // the mode's own state
	started time.Time

	digestOnce sync.Once
	digest     string

	mu      sync.Mutex
	reexecs int
	last    *control.ReexecStatus
}

func (x *reexecer) selfDigest() string {
	x.digestOnce.Do(func() {
		d, err := reexec.SelfDigest()
		if err != nil {
			d = "unknown (" + err.Error() + ")"
		}
		x.digest = d
	})
	return x.digest
}

// Version answers GET /v1/version.
func (x *reexecer) Version() control.VersionInfo {
	x.mu.Lock()
	defer x.mu.Unlock()
	v := control.VersionInfo{Version: buildVersion(), Digest: x.selfDigest(), Pid: os.Getpid(), Mode: x.mode,
		Started: x.started, StateVersion: reexec.Version, Reexecs: x.reexecs}
	if x.last != nil {
		l := *x.last
		v.Last = &l
	}
	return v
}

func (x *reexecer) setLast(st control.ReexecStatus) {
	x.mu.Lock()
	x.last = &st
	x.mu.Unlock()
}

// Prepare implements control.Reexecer: everything that can refuse without touching a
// service. The change guard is taken first and kept through commit, so no kexec or update can
// start between the checks below and the execve, and none that started before gets here.
func (x *reexecer) Prepare(binary io.Reader, sum string) (control.ReexecStarted, func(), error) {
	release, err := x.change.take("a re-exec")
	if err != nil {
		return control.ReexecStarted{}, nil, fmt.Errorf("%w: %v", control.ErrReexecBusy, err)
	}
	started, commit, err := x.prepare(binary, sum)
	if err != nil {
		release()
		return started, nil, err
	}
	return started, func() {
		defer release() // reached only when the execve did not happen
		commit()
	}, nil
}

func (x *reexecer) prepare(binary io.Reader, sum string) (control.ReexecStarted, func(), error) {
	var none control.ReexecStarted
	if err := x.refuseNow(); err != nil {
		return none, nil, err
	}
	// The upload first: the API gives a body BodyIdle without progress, and copying the
	// running binary takes a while on a slow (emulated) machine.
	var target *os.File
	var targetSum string
	var err error
	if binary != nil {
		if target, targetSum, err = reexec.CopyToMemfd("baton-new", binary); err != nil {
			return none, nil, fmt.Errorf("receive the binary: %w", err)
		}
		if !strings.EqualFold(targetSum, sum) {
			target.Close()
			return none, nil, fmt.Errorf("%w: sha256 of what arrived is %s, not %s (truncated or damaged upload)", control.ErrBadBinary, targetSum, sum)
		}
	}
	self, err := os.Open("/proc/self/exe")
	if err == nil {
		var prev *os.File
		var prevSum string
		prev, prevSum, err = reexec.CopyToMemfd("baton-previous", self)
		self.Close()
		if err == nil {
			return x.prepareWith(binary != nil, prev, prevSum, target, targetSum)
		}
	}
	if target != nil {
		target.Close()
	}
	return none, nil, fmt.Errorf("copy the running binary: %w", err)
}

// prepareWith checks and tries the target (the previous binary itself when target is nil).
func (x *reexecer) prepareWith(uploaded bool, prev *os.File, prevSum string, target *os.File, targetSum string) (control.ReexecStarted, func(), error) {
	var none control.ReexecStarted
	if target == nil {
		target, targetSum = prev, prevSum
	}
	closeBoth := func() {
		if target != prev {
			target.Close()
		}
		prev.Close()
	}
	// An uploaded binary must be static: the running one runs already, whatever it is.
	if err := reexec.CheckBinary(target); uploaded && err != nil {
		closeBoth()
		return none, nil, fmt.Errorf("%w: %v", control.ErrBadBinary, err)
	}
	if err := x.trial(target); err != nil {
		closeBoth()
		x.log.Error("reexec: the new binary failed its trial; nothing changed", "err", err)
		return none, nil, err
	}
	id := newReexecID()
	x.setLast(control.ReexecStatus{ID: id, State: "running", From: prevSum, To: targetSum, At: time.Now()})
	commit := func() {
		defer closeBoth()
		if err := x.commit(id, prevSum, prev, target); err != nil {
			x.log.Error("reexec failed; this binary goes on", "id", id, "err", err, system.KmsgKey, true)
			x.setLast(control.ReexecStatus{ID: id, State: "failed", Error: err.Error(), From: prevSum, To: targetSum, At: time.Now()})
		}
	}
	return control.ReexecStarted{ID: id, To: targetSum}, commit, nil
}

// refuseNow says why a re-exec cannot start now: a service being upgraded (or running a
// pre/post command), or what the mode reports (a kexec load, an update, a shutdown).
func (x *reexecer) refuseNow() error {
	if name := x.sv.Busy(); name != "" {
		return fmt.Errorf("%w: service %s is being upgraded; try again when it is done", control.ErrReexecBusy, name)
	}
	if x.busy != nil {
		if err := x.busy(); err != nil {
			return fmt.Errorf("%w: %v", control.ErrReexecBusy, err)
		}
	}
	return nil
}

func newReexecID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// trial runs the target in check mode on a copy of the state.
func (x *reexecer) trial(target *os.File) error {
	saved, err := x.sv.Snapshot()
	if err != nil {
		return fmt.Errorf("trial: write the state: %w", err)
	}
	machine, err := x.machineWith(0)
	if err != nil {
		return fmt.Errorf("trial: %w", err)
	}
	data, err := reexec.Encode(&reexec.State{Trial: true, PrevFd: -1, Control: -1, Remote: -1, Services: saved, Machine: machine})
	if err != nil {
		return err
	}
	in, err := reexec.Memfd("baton-trial-state", false)
	if err != nil {
		return err
	}
	defer in.Close()
	if _, err := in.Write(data); err != nil {
		return err
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	path := fmt.Sprintf("/proc/self/fd/%d", target.Fd())
	// The flag makes an older baton without check mode stop at its flag parsing instead of
	// starting services.
	argv := []string{checkName, "--reexec-check"}
	attr := &syscall.ProcAttr{Dir: "/", Env: []string{"PATH=/usr/bin:/bin"}, Files: []uintptr{in.Fd(), w.Fd(), w.Fd()},
		Sys: &syscall.SysProcAttr{Setsid: true}}
	exits, pid, err := x.reaper.StartFunc(func() (int, error) { return syscall.ForkExec(path, argv, attr) })
	w.Close()
	if err != nil {
		return fmt.Errorf("trial: start the new binary: %w", err)
	}
	out := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(r, 64<<10))
		out <- b
	}()
	var exit system.Exit
	select {
	case exit = <-exits:
	case <-time.After(trialTimeout):
		_ = unix.Kill(pid, unix.SIGKILL)
		<-exits
		return fmt.Errorf("trial: the new binary did not answer within %s (killed)", trialTimeout)
	}
	said := strings.TrimSpace(string(<-out))
	if !exit.Success() || !strings.HasPrefix(said, "ok") {
		if said == "" {
			said = "nothing"
		}
		return fmt.Errorf("trial: the new binary %s; it said: %s", exit, lastLines(said, 3))
	}
	x.log.Info("reexec: trial passed", "answer", said)
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// commit freezes, serializes and executes the target. It returns only if the execve did not
// happen, with everything thawed.
func (x *reexecer) commit(id, prevSum string, prev, target *os.File) error {
	x.reaper.Pause()
	frozen, err := x.sv.Freeze(x.reaper)
	if err != nil {
		x.reaper.Resume()
		return fmt.Errorf("freeze the services: %w", err)
	}
	frozenAt := system.Boottime()
	thaw := func() {
		frozen.Thaw()
		x.reaper.Resume()
	}
	local, remote, err := handover.park()
	if err != nil {
		thaw()
		return fmt.Errorf("hand over the control API: %w", err)
	}
	thawAll := func() {
		handover.unpark(local, remote)
		thaw()
	}
	x.mu.Lock()
	count := x.reexecs + 1
	x.mu.Unlock()
	machine, err := x.machineWith(count)
	if err != nil {
		thawAll()
		return err
	}
	st := &reexec.State{ID: id, FromExe: prevSum, PrevFd: int(prev.Fd()), FrozenAt: frozenAt, Services: frozen.Saved,
		Control: local, Remote: remote, Machine: machine}
	st.Fds = append(append([]int{}, frozen.Fds...), st.PrevFd)
	for _, fd := range []int{local, remote} {
		if fd >= 0 {
			st.Fds = append(st.Fds, fd)
		}
	}
	data, err := reexec.Encode(st)
	if err != nil {
		thawAll()
		return err
	}
	mem, err := reexec.WriteState(data)
	if err != nil {
		thawAll()
		return err
	}
	defer mem.Close()
	if err := reexec.KeepOpen(st.PrevFd); err != nil {
		thawAll()
		return err
	}
	env := append(cleanEnv(), fmt.Sprintf("%s=%d", envState, mem.Fd()), fmt.Sprintf("%s=%d", envPrev, st.PrevFd))
	x.log.Info("reexec: executing the new binary", "id", id, "services", len(st.Services.Services), "fds", len(st.Fds),
		"state_bytes", len(data), system.KmsgKey, true)
	err = reexec.Exec(int(target.Fd()), os.Args, env)
	// Still here: the execve failed, nothing was replaced.
	_, _ = unix.FcntlInt(prev.Fd(), unix.F_SETFD, unix.FD_CLOEXEC)
	thawAll()
	return err
}

// machineWith is the mode's state with the re-exec count of the next image.
func (x *reexecer) machineWith(count int) (json.RawMessage, error) {
	m, err := x.machine()
	if err != nil {
		return nil, fmt.Errorf("write the state: %w", err)
	}
	var w struct {
		Reexecs int             `json:"reexecs"`
		Mode    json.RawMessage `json:"mode"`
	}
	w.Reexecs, w.Mode = count, m
	return json.Marshal(w)
}

// cleanEnv is this process's environment without the re-exec's variables.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BATON_REEXEC_") {
			out = append(out, kv)
		}
	}
	return out
}
