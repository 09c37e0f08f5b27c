package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/system"
)

// subreaperMain supervises the configured services without touching the machine: no mounts,
// modules, network or power. Orphans of the services are re-parented to it and reaped.
func subreaperMain(args []string) int {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.Usage = printUsage
	cfgPath := fs.String("config", config.DefaultPath, "config file")
	runDir := fs.String("run-dir", "/run/baton", "directory for the control and notify sockets")
	cgroupRoot := fs.String("cgroup-root", "", "cgroup2 directory to put services in (default: none)")
	debug := fs.Bool("debug", false, "log debug messages")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	start := time.Now()
	level := new(slog.LevelVar)
	if *debug {
		level.Set(slog.LevelDebug)
	}
	log := slog.New(system.NewConsoleHandler(os.Stderr, nil, level))
	if err := system.CloseInheritedOnExec(); err != nil {
		log.Warn("fds baton inherited may reach the services", "err", err)
	}
	if _, err := system.RaiseFDLimit(); err != nil {
		log.Warn("fd limit not raised", "err", err)
	}
	// Caught, not ignored: SIG_IGN would pass to every service through execve. SIGHUP (the
	// terminal that started baton closed) would otherwise end baton and orphan its services.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, unix.SIGHUP)
	// Notified, so a write to a closed stdout or stderr pipe fails with EPIPE instead of
	// killing baton. Never read: a full channel drops the signal, and logging each one would
	// write to the broken pipe again.
	signal.Notify(make(chan os.Signal, 1), unix.SIGPIPE)
	// What is still ignored (SIGINT for a background job of a script until it is notified
	// below, signals 32 and 33, which Go never handles) would stay ignored in the services.
	system.ResetIgnoredSignals()
	if restoring != nil { // started by initctl reexec (reexec_subreaper.go)
		return subreaperRestored(log, *cfgPath, *runDir, *cgroupRoot, hup)
	}

	cfg, err := config.LoadFor(*cfgPath, system.Accounts())
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(os.Stderr, "baton: config error:", line)
		}
		return 1
	}
	if err := os.MkdirAll(*runDir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "baton: create run dir: %v\n", err)
		return 1
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "baton: prctl(PR_SET_CHILD_SUBREAPER): %v\n", err)
		return 1
	}
	stop := make(chan os.Signal, 2)
	signal.Notify(stop, unix.SIGTERM, unix.SIGINT)
	reaper := system.NewReaper(log)
	var cg *services.Cgroups
	if *cgroupRoot != "" {
		if cg, err = services.SetupCgroups(*cgroupRoot); err != nil {
			log.Warn("cgroups", "err", err)
		}
	}
	sv, err := services.New(cfg, services.Options{Log: log, Reaper: reaper, Console: os.Stdout, RunDir: *runDir, Cgroups: cg})
	if err != nil {
		fmt.Fprintln(os.Stderr, "baton:", err)
		return 1
	}
	var readyAt atomic.Int64 // read by API handlers
	srv := &control.Server{SV: sv, Log: log, Timeline: func() control.Timeline {
		return control.Timeline{InitToReady: time.Duration(readyAt.Load()), Services: serviceTimeline(sv, start)}
	}, ReloadConfig: configReloader(log, sv, *cfgPath), ConfigFile: *cfgPath}
	srv.Reexec = subreaperReexecer(log, reaper, sv, cfg, start, &readyAt)
	listeners := startControl(log, srv, *runDir, cfg)
	failed := 0
	for _, r := range sv.StartAll() {
		if r.Err != nil {
			failed++
			log.Error("service failed to start", "service", r.Name, "err", r.Err)
		}
	}
	readyAt.Store(int64(time.Since(start)))
	log.Info("all services started", "services", len(cfg.Service), "failed", failed, "run_dir", *runDir)
	return serveUntilStopped(log, hup, stop, listeners, sv)
}

// serveUntilStopped supervises until SIGTERM or SIGINT, then stops every service.
func serveUntilStopped(log *slog.Logger, hup, stop <-chan os.Signal, listeners []net.Listener, sv *services.Supervisor) int {
	var sig os.Signal
	for sig == nil {
		select {
		case <-hup:
			log.Info("SIGHUP ignored (subreaper mode: baton keeps running and supervising; SIGTERM or SIGINT stops it)")
		case sig = <-stop:
		}
	}
	log.Info("stopping", "signal", sig.String())
	for _, l := range listeners {
		l.Close()
	}
	if killed := sv.StopAll(); len(killed) > 0 {
		log.Warn("services killed after their stop timeout", "services", strings.Join(killed, ","))
	}
	_ = sv.Close()
	return 0
}
