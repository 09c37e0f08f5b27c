package main

import (
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/system"
)

// shutdown stops everything in order and calls reboot(2). It returns only if reboot(2) fails.
func (m *machine) shutdown(action system.PowerAction) {
	m.mu.Lock()
	m.shutting = true
	m.mu.Unlock()
	start := time.Now()
	runSteps(m.log, []step{
		{"stop services", m.stopServices},
		{"end remaining processes", func() error {
			if n := system.KillAll(m.log, 2*time.Second); n > 0 {
				m.log.Warn("killed processes that outlived SIGTERM", "count", n)
			}
			return nil
		}},
		{"sync", func() error { unix.Sync(); return nil }},
		{"unmount file systems", func() error { system.UnmountAll(m.log); return nil }},
	})
	m.log.Info("shutdown complete", "action", action.String(), "took", time.Since(start).Round(time.Millisecond))
	if err := system.Power(action); err != nil {
		m.log.Error("power action failed; PID 1 stays up", "err", err)
	}
}

func (m *machine) stopServices() error {
	if m.sv == nil {
		return nil
	}
	if killed := m.sv.StopAll(); len(killed) > 0 {
		m.log.Warn("services killed after their stop timeout", "services", strings.Join(killed, ","))
	}
	return m.sv.Close()
}
