package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/reexec"
	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/system"
	"github.com/baton-init/baton/update"
)

// pid1State is PID 1's own part of a re-exec's state: what the boot learnt and the shutdown
// and the API need. The kernel's state (mounts, modules, network, a kernel loaded for kexec)
// stays as it is across execve.
type pid1State struct {
	InitAt         int64                   `json:"init_at"` // kernel uptime when the first /init started, ns
	BootWall       time.Time               `json:"boot_wall"`
	ConfigPath     string                  `json:"config_path"`
	Config         *config.Config          `json:"config"` // as loaded at boot (nil: none)
	Steps          []control.TimelineEntry `json:"steps"`
	ReadyAt        int64                   `json:"ready_at"` // kernel uptime when the boot was done, ns
	ShutID         string                  `json:"shut_id,omitempty"`
	Previous       []control.TimelineEntry `json:"previous,omitempty"`
	PreviousAction string                  `json:"previous_action,omitempty"`
	PreviousKexec  string                  `json:"previous_kexec,omitempty"`
	Cgroups        string                  `json:"cgroups,omitempty"` // their root; "" for none
	Debug          bool                    `json:"debug,omitempty"`
}

// newReexecer is initctl reexec for PID 1 (called when the API is set up).
func (m *machine) newReexecer() *reexecer {
	return &reexecer{log: m.log, mode: "pid1", reaper: m.reaper, sv: m.sv, started: time.Now(), change: &m.change,
		busy: m.reexecBusy, machine: m.reexecState}
}

// reexecBusy: no re-exec while a shutdown is pending, or an update is on trial (its
// confirmation runs in this image). A kexec or an update under way holds the change guard,
// which the re-exec takes before asking this.
func (m *machine) reexecBusy() error {
	m.mu.Lock()
	shutting := m.shutting
	m.mu.Unlock()
	if shutting {
		return errors.New("a shutdown is pending or under way")
	}
	if u := m.updater.Load(); u != nil {
		st := u.Status()
		if st.Last != nil && st.Last.State == update.StateTrial {
			return fmt.Errorf("update %s is on trial, not confirmed yet", st.Last.ID)
		}
	}
	return nil
}

func (m *machine) reexecState() (json.RawMessage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := pid1State{InitAt: int64(m.initAt), BootWall: m.bootWall, ConfigPath: m.configPath, Config: m.cfg,
		Steps: stepTimeline(m.steps), ReadyAt: int64(m.readyAt), ShutID: m.shutID, Previous: m.previous,
		PreviousAction: m.previousAction, PreviousKexec: m.previousKexec, Debug: m.level.Level() == slog.LevelDebug}
	if m.cgroups != nil {
		st.Cgroups = m.cgroups.Root
	}
	return json.Marshal(st)
}

// pid1Restored is pid1Main in an image a re-exec started: the services, sockets, control API
// and what the boot learnt are taken over; nothing of the boot runs again.
func pid1Restored() {
	in := restoring
	m := newMachine(os.Stderr)
	defer m.stayAlive()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGUSR1, unix.SIGUSR2)
	signal.Notify(make(chan os.Signal, 1), unix.SIGPIPE)
	if k := system.OpenKmsg(); k != nil {
		m.console.SetKmsg(k)
	}
	if err := system.CloseInheritedOnExec(); err != nil {
		m.log.Warn("fds may reach the services", "err", err)
	}
	if _, err := system.RaiseFDLimit(); err != nil {
		m.log.Warn("fd limit not raised", "err", err)
	}
	m.reaper = system.NewPausedReaper(m.log)
	var ps pid1State
	if err := json.Unmarshal(in.mode, &ps); err != nil {
		giveBack(in, in.st.Fds, fmt.Errorf("state: PID 1 part: %w", err))
		return // stayAlive: reaping, without services
	}
	m.restoreFrom(ps)
	r, err := in.restoreSupervisor(m.cfg, services.Options{Log: m.log, Reaper: m.reaper, Console: os.Stdout, RunDir: runDir, Cgroups: m.cgroups})
	if err != nil {
		giveBack(in, in.st.Fds, err)
		return
	}
	m.sv = r.SV
	m.srv = &control.Server{SV: m.sv, Log: m.log, Timeline: m.timeline, Kexec: m.kexecRequest,
		Power:        func(a system.PowerAction) error { return m.requestPower("control API", a, nil) },
		ReloadConfig: configReloader(m.log, m.sv, m.configPath), ConfigFile: m.configPath, Update: m.updater.Load}
	x := m.newReexecer()
	m.srv.Reexec = x
	startLocalControl(m.log, m.srv, runDir)
	in.finish(m.log, x, r, m.reaper)
	restoring = nil
	// After the services run again: its TLS setup is slow on an emulated CPU, and its
	// connections wait in the listener's queue meanwhile.
	if err := m.startRemoteControl(); err != nil {
		m.log.Error("remote control API not taken over", "err", err)
	}
	handover.release()
	go m.powerSignals(sigs)
	m.updater.Store(m.newUpdater())
	for _, s := range []step{{name: "start watchdog", run: m.startWatchdog}, {name: "watch power button", run: m.watchPowerButton},
		{name: "install the running binary as /init", run: m.installInit}} {
		if err := runContained(m.log, s); err != nil {
			m.log.Error("after reexec", "step", s.name, "err", err)
		}
	}
	for action := range m.power {
		m.powerAction(action)
	}
}

func (m *machine) restoreFrom(ps pid1State) {
	m.initAt, m.bootWall, m.configPath, m.cfg = time.Duration(ps.InitAt), ps.BootWall, ps.ConfigPath, ps.Config
	m.readyAt, m.shutID, m.previous, m.previousAction, m.previousKexec = time.Duration(ps.ReadyAt), ps.ShutID, ps.Previous, ps.PreviousAction, ps.PreviousKexec
	for _, e := range ps.Steps {
		t := timing{Name: e.Name, At: e.At, Took: e.Took, After: e.After, WaitedFor: e.WaitedFor, Service: e.Service}
		if e.Error != "" {
			t.Err = errors.New(e.Error)
		}
		m.steps = append(m.steps, t)
	}
	if ps.Cgroups != "" {
		m.cgroups = &services.Cgroups{Root: ps.Cgroups}
	}
	if ps.Debug {
		m.level.Set(slog.LevelDebug)
	}
	if c, err := system.ReadCmdline(); err == nil {
		m.cmdline = c
	}
}

// installInit makes /init (which /sbin/modprobe and /bin/initctl link to) the running binary,
// when a re-exec brought another one: the kernel's module helper and initctl must be this
// version, and so must a later re-exec without --binary.
func (m *machine) installInit() error {
	want, err := reexec.SelfDigest()
	if err != nil {
		return err
	}
	if sum, err := reexec.FileDigest("/init"); err == nil && sum == want {
		return nil
	}
	self, err := os.Open("/proc/self/exe")
	if err != nil {
		return err
	}
	defer self.Close()
	tmp, err := os.OpenFile("/init.reexec", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	_, err = io.Copy(tmp, self)
	if err = errors.Join(err, tmp.Close()); err != nil {
		os.Remove("/init.reexec")
		return err
	}
	if err := os.Rename("/init.reexec", "/init"); err != nil {
		return err
	}
	m.log.Info("/init is the running binary now", "sha256", want)
	return nil
}
