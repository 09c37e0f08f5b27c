package main

import (
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/system"
)

// startControl serves the control API on runDir/control.sock and, when the config asks, over
// TCP with mutual TLS. Failing to serve is logged, never fatal: the services run regardless.
func startControl(log *slog.Logger, srv *control.Server, runDir string, cfg *config.Config) []net.Listener {
	var ls []net.Listener
	if l := startLocalControl(log, srv, runDir); l != nil {
		ls = append(ls, l)
	}
	if cfg != nil && cfg.Control.Remote != "" {
		if rl, err := startRemoteControl(log, srv, cfg); err == nil {
			ls = append(ls, rl)
		}
	}
	return ls
}

func startLocalControl(log *slog.Logger, srv *control.Server, runDir string) net.Listener {
	sock := filepath.Join(runDir, "control.sock")
	l, err := handover.localListener(sock) // the one a re-exec handed over, if any
	if err != nil {
		log.Error("control API not available", "err", err)
		return nil
	}
	go func() {
		defer system.Recover(log, "control")
		if err := srv.ServeLocal(l); err != nil {
			log.Error("control API stopped", "err", err)
		}
	}()
	log.Info("control API listening", "socket", sock)
	return l
}

func startRemoteControl(log *slog.Logger, srv *control.Server, cfg *config.Config) (net.Listener, error) {
	srv.Remote.MaxHandshakes, srv.Remote.MaxConnections = cfg.Control.MaxHandshakes, cfg.Control.MaxConnections
	rl, err := handover.serveRemote(srv, cfg) // the one a re-exec handed over, if any
	if err != nil {
		log.Error("remote control API not available", "err", err)
		return nil, err
	}
	log.Info("remote control API listening (mutual TLS)", "addr", rl.Addr().String())
	return rl, nil
}

// serviceTimeline turns the services' first start and ready times into timeline entries,
// measured from base (the kernel's start as wall time, or baton's start outside PID 1).
func serviceTimeline(sv *services.Supervisor, base time.Time) []control.TimelineEntry {
	var out []control.TimelineEntry
	for _, st := range sv.Statuses() {
		if st.StartedAt.IsZero() {
			out = append(out, control.TimelineEntry{Name: st.Name, Error: "never started: " + st.Error})
			continue
		}
		e := control.TimelineEntry{Name: st.Name, At: st.StartedAt.Sub(base)}
		if st.ReadyAt.IsZero() {
			e.Error = "never ready"
		} else {
			e.Took = st.ReadyAt.Sub(st.StartedAt)
		}
		out = append(out, e)
	}
	return out
}

func stepTimeline(steps []timing) []control.TimelineEntry {
	out := make([]control.TimelineEntry, 0, len(steps))
	for _, s := range steps {
		e := control.TimelineEntry{Name: s.Name, At: s.At, Took: s.Took, After: s.After, WaitedFor: s.WaitedFor, Service: s.Service}
		if s.Err != nil {
			e.Error = s.Err.Error()
		}
		out = append(out, e)
	}
	return out
}
