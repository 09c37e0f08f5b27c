package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/reexec"
	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/system"
)

// The new image's side of a re-exec (reexec.go has the old one's): the trial run's check mode,
// reading the state handed over, and giving it back to the previous binary when this one
// cannot take over.

// reexecCheckMain is the trial run: decode the state on stdin and answer.
func reexecCheckMain() int {
	data, err := io.ReadAll(io.LimitReader(os.Stdin, reexec.MaxSize+1<<10))
	if err != nil {
		fmt.Println("refused: read the state:", err)
		return 1
	}
	st, err := reexec.Decode(data)
	if err != nil {
		fmt.Println("refused:", err)
		return 1
	}
	if _, err := decodeMachine(st.Machine); err != nil {
		fmt.Println("refused:", err)
		return 1
	}
	if reexecFault == "trial" {
		fmt.Println("refused: a test binary built to fail its trial (reexecFault=trial)")
		return 1
	}
	fmt.Printf("ok: baton %s reads state version %d (%d services)\n", buildVersion(), reexec.Version, len(st.Services.Services))
	return 0
}

// incoming is the state a previous image handed to this one.
type incoming struct {
	st      *reexec.State
	data    []byte
	stateFd int
	prevFd  int
	failed  string // the new binary gave up: why (this image is the previous binary again)
	reexecs int
	mode    json.RawMessage
}

// restoring is set by restoreEarly in an image started by a re-exec.
var restoring *incoming

// restoreEarly runs first in main: in an image started by a re-exec, it reads the state and
// removes the re-exec's variables from the environment. A state this binary cannot read is
// handed back to the previous binary at once, before anything was changed.
func restoreEarly() {
	v := os.Getenv(envState)
	if v == "" {
		return
	}
	if reexecFault == "slow-restore" && os.Getenv(envFailed) == "" {
		time.Sleep(time.Second) // a test binary that widens the gap, for a process to end in it
	}
	in := &incoming{failed: os.Getenv(envFailed), prevFd: -1}
	fmt.Sscan(v, &in.stateFd)
	fmt.Sscan(os.Getenv(envPrev), &in.prevFd)
	for _, k := range []string{envState, envPrev, envFailed} {
		os.Unsetenv(k)
	}
	data, err := reexec.ReadFd(in.stateFd)
	var st *reexec.State
	if err == nil {
		st, err = reexec.Decode(data)
	}
	if err == nil {
		for _, fd := range st.Fds {
			if !reexec.IsOpen(fd) {
				err = fmt.Errorf("state: fd %d it names is not open", fd)
				break
			}
		}
	}
	if err == nil {
		var mw machineWrap
		if mw, err = decodeMachine(st.Machine); err == nil {
			in.reexecs, in.mode = mw.Reexecs, mw.Mode
		}
	}
	if err != nil {
		giveBack(in, nil, fmt.Errorf("the new binary cannot read the state: %w", err))
		return // only if even that failed: start afresh
	}
	in.st, in.data = st, data
	restoring = in
}

type machineWrap struct {
	Reexecs int             `json:"reexecs"`
	Mode    json.RawMessage `json:"mode"`
}

func decodeMachine(raw json.RawMessage) (machineWrap, error) {
	var w machineWrap
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return w, fmt.Errorf("state: machine: %w", err)
	}
	return w, nil
}

// giveBack executes the previous binary with the state, because this one cannot take over
// (why). It returns only if that failed too: the caller then has no state to restore and
// starts afresh (logged loudly). A previous binary that itself fails gives up here.
func giveBack(in *incoming, fds []int, why error) {
	fmt.Fprintf(os.Stderr, "baton: reexec: %v; going back to the previous binary\n", why)
	if in.failed != "" || in.prevFd < 0 {
		fmt.Fprintf(os.Stderr, "baton: reexec: no way back (previous binary: fd %d; already going back: %q); starting afresh — services are orphaned\n", in.prevFd, in.failed)
		return
	}
	for _, fd := range append(fds, in.stateFd, in.prevFd) {
		_ = reexec.KeepOpen(fd)
	}
	env := append(cleanEnv(), fmt.Sprintf("%s=%d", envState, in.stateFd), fmt.Sprintf("%s=%d", envPrev, in.prevFd),
		envFailed+"="+strings.ReplaceAll(why.Error(), "\n", " "))
	err := reexec.Exec(in.prevFd, os.Args, env)
	fmt.Fprintf(os.Stderr, "baton: reexec: execute the previous binary: %v; starting afresh — services are orphaned\n", err)
}

// restoreSupervisor rebuilds the services (not started yet: finish does) and the control
// listeners' handover. A panic is turned into an error: the caller gives the state back.
func (in *incoming) restoreSupervisor(cfg *config.Config, o services.Options) (r *services.Restored, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic while restoring: %v", p)
		}
	}()
	handover.inLocal, handover.inRemote = in.st.Control, in.st.Remote
	var logCfg config.Log
	if cfg != nil {
		logCfg = cfg.Log
	}
	r, err = services.Restore(in.st.Services, logCfg, o)
	if err == nil && reexecFault == "panic-restore" {
		panic("a test binary built to panic while restoring (reexecFault=panic-restore)")
	}
	return r, err
}

// finish starts what was restored and records how the re-exec went.
func (in *incoming) finish(log *slog.Logger, x *reexecer, r *services.Restored, reaper *system.Reaper) {
	r.Start()
	reaper.Resume()
	if in.prevFd >= 0 {
		unix.Close(in.prevFd)
	}
	unix.Close(in.stateFd)
	pause := time.Duration(system.Boottime() - in.st.FrozenAt)
	x.mu.Lock()
	x.reexecs = in.reexecs
	x.mu.Unlock()
	st := control.ReexecStatus{ID: in.st.ID, State: "done", From: in.st.FromExe, To: x.selfDigest(),
		PauseMs: float64(pause.Microseconds()) / 1000, At: time.Now()}
	if in.failed != "" {
		st.State, st.Error, st.To = "failed", in.failed+"; the previous binary took over again", in.st.FromExe
		log.Error("reexec failed; the previous binary runs again", "id", in.st.ID, "reason", in.failed, system.KmsgKey, true)
	} else {
		log.Info("reexec done", "id", in.st.ID, "services", len(in.st.Services.Services), "pause", pause.Round(time.Microsecond),
			"version", buildVersion(), system.KmsgKey, true)
	}
	x.setLast(st)
}
