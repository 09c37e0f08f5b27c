package main

import (
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/system"
)

// shutdown stops everything in order and calls reboot(2). It returns only if reboot(2) fails.
func (m *machine) shutdown(action system.PowerAction) {
	start := time.Now()
	list := []step{
		{name: "stop services", run: m.stopServices},
		{name: "end remaining processes", run: func() error {
			if n := system.KillAll(m.log, 2*time.Second); n > 0 {
				m.log.Warn("killed processes that outlived SIGTERM", "count", n)
			}
			return nil
		}},
		{name: "sync", run: func() error { unix.Sync(); return nil }},
	}
	if action == system.Kexec {
		list = m.withCarry(list)
	}
	steps := runSteps(m.log, list)
	m.saveShutdown(action, steps)
	runSteps(m.log, []step{{name: "unmount file systems", run: func() error {
		system.UnmountAll(m.log)
		unix.Sync() // what a file system left mounted still holds (the record above); quick when clean
		return nil
	}}})
	m.log.Info("shutdown complete", "action", action.String(), "took", time.Since(start).Round(time.Millisecond), system.KmsgKey, true)
	m.watchdogBeforePower(action)
	var err error
	if action == system.Kexec {
		err = m.jump()
	} else {
		err = system.Power(action)
	}
	m.log.Error("power action failed; PID 1 stays up and starts the services again", "action", action.String(), "err", err)
	m.recover()
}

// recover brings the machine back after a power action that did not happen (a kexec that
// could not jump): file systems and services again, so nothing is lost.
func (m *machine) recover() {
	// The shutdown left the kernel's views and the file systems in memory mounted
	// (system.UnmountAll): mounting them again would hide what they hold (/run's sockets).
	var unmounted []system.Mountpoint
	for _, mp := range system.BaseMounts {
		if !isMountPoint(mp.Target) {
			unmounted = append(unmounted, mp)
		}
	}
	system.MountAll(m.log, unmounted)
	if m.cfg != nil && len(m.cfg.Mount) > 0 {
		_ = system.MountConfigured(m.log, m.cfg.Mount)
	}
	m.mu.Lock()
	m.shutting, m.kexec = false, nil
	m.mu.Unlock()
	m.resumeCarried()
	m.rearmWatchdog()
	if m.sv != nil {
		for _, r := range m.sv.StartAll() {
			if r.Err != nil {
				m.log.Error("service did not start again", "service", r.Name, "err", r.Err)
			}
		}
	}
}

func (m *machine) stopServices() error {
	if m.sv == nil {
		return nil
	}
	if killed := m.sv.StopAll(); len(killed) > 0 {
		m.log.Warn("services killed after their stop timeout", "services", strings.Join(killed, ","))
	}
	return nil // the sockets stay open until the very end: a failed jump starts the services again
}
