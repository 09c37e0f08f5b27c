package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/system"
)

// subreaperState is the subreaper's own part of a re-exec's state.
type subreaperState struct {
	Config  *config.Config `json:"config"`   // as loaded at start (reload-config changes services only)
	Start   int64          `json:"start"`    // CLOCK_BOOTTIME of baton's first start
	ReadyAt int64          `json:"ready_at"` // first start → all services started, ns
}

func subreaperReexecer(log *slog.Logger, reaper *system.Reaper, sv *services.Supervisor, cfg *config.Config,
	start time.Time, readyAt *atomic.Int64) *reexecer {
	// No kexec or update here: the guard is the re-exec's own.
	x := &reexecer{log: log, mode: "subreaper", reaper: reaper, sv: sv, started: time.Now(), change: &changeGuard{}}
	x.machine = func() (json.RawMessage, error) {
		return json.Marshal(subreaperState{Config: cfg, Start: system.ToBoottime(start), ReadyAt: readyAt.Load()})
	}
	return x
}

// subreaperRestored is subreaperMain in an image a re-exec started: the services, sockets and
// control API of the previous image are taken over, nothing is started.
func subreaperRestored(log *slog.Logger, cfgPath, runDir, cgroupRoot string, hup <-chan os.Signal) int {
	in := restoring
	var ms subreaperState
	if err := json.Unmarshal(in.mode, &ms); err != nil || ms.Config == nil {
		giveBack(in, in.st.Fds, fmt.Errorf("state: subreaper part: %v", err))
		return 1
	}
	cfg, start := ms.Config, system.FromBoottime(ms.Start)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "baton: prctl(PR_SET_CHILD_SUBREAPER): %v\n", err)
	}
	stop := make(chan os.Signal, 2)
	signal.Notify(stop, unix.SIGTERM, unix.SIGINT)
	reaper := system.NewPausedReaper(log)
	var cg *services.Cgroups
	if cgroupRoot != "" {
		cg = &services.Cgroups{Root: cgroupRoot} // set up by the first image
	}
	r, err := in.restoreSupervisor(cfg, services.Options{Log: log, Reaper: reaper, Console: os.Stdout, RunDir: runDir, Cgroups: cg})
	if err != nil {
		giveBack(in, in.st.Fds, err)
		return 1
	}
	sv := r.SV
	var readyAt atomic.Int64
	readyAt.Store(ms.ReadyAt)
	srv := &control.Server{SV: sv, Log: log, Timeline: func() control.Timeline {
		return control.Timeline{InitToReady: time.Duration(readyAt.Load()), Services: serviceTimeline(sv, start)}
	}, ReloadConfig: configReloader(log, sv, cfgPath), ConfigFile: cfgPath}
	x := subreaperReexecer(log, reaper, sv, cfg, start, &readyAt)
	srv.Reexec = x
	listeners := startControl(log, srv, runDir, cfg)
	in.finish(log, x, r, reaper)
	handover.release()
	restoring = nil
	return serveUntilStopped(log, hup, stop, listeners, sv)
}
