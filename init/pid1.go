package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/system"
	"github.com/baton-init/baton/system/kmod"
	"github.com/baton-init/baton/update"
)

// modprobePath is where the image links the init binary as the kernel's module helper.
const modprobePath = "/sbin/modprobe"

// runDir holds the control socket and the notify sockets.
const runDir = "/run/baton"

// machine is what the boot learns and the shutdown needs.
type machine struct {
	log        *slog.Logger // never replaced once goroutines run: they read it unlocked
	console    *system.ConsoleHandler
	level      *slog.LevelVar
	reaper     *system.Reaper
	cmdline    system.Cmdline
	configPath string
	cfg        *config.Config // nil when the config could not be loaded
	modules    *kmod.Loader
	sv         *services.Supervisor
	updater    atomic.Pointer[update.Updater] // nil without a manifest or slots on /boot, or until /boot is mounted
	cgroups    *services.Cgroups
	srv        *control.Server
	initAt     time.Duration           // kernel uptime when /init started
	bootWall   time.Time               // the kernel's start, as wall-clock time
	power      chan system.PowerAction // the one accepted request (capacity 1); see requestPower
	// modulesDone closes when the module step has ended; the network waits for its interface
	// until then (and a little after), not for the whole step.
	modulesDone chan struct{}
	modulesOnce sync.Once
	// reachLoaded gets what startReachModules loaded, once it has ended (nil: it did not run).
	reachLoaded chan []string
	// starts bounds the services starting at once at boot (nil: no bound); slotWaits (under
	// mu) is how long a service's start waited for it.
	starts    *startSlots
	slotWaits map[string]time.Duration
	// modulesWaited (under mu): how long the module step waited for the early services.
	modulesWaited time.Duration
	change        changeGuard // one kexec, update or re-exec at a time (change.go)

	mu             sync.Mutex
	steps          []timing
	readyAt        time.Duration // kernel uptime when all services had started
	shutting       bool          // a power request was accepted; cleared only if it failed
	kexec          *pendingKexec
	watchdog       *watchdog // nil without [watchdog] device
	shutID         string
	previous       []control.TimelineEntry // the previous shutdown, if /boot recorded it
	previousAction string
	previousKexec  string
	carry          *carrying // connections being carried to the next kernel (carry.go)
	carryIn        *carryIn  // connections the previous kernel carried, until restored
}

// pid1Main boots the appliance, then waits for a power signal. It never returns: if PID 1
// exits, the kernel panics.
func pid1Main() {
	m := newMachine(os.Stderr)
	defer m.stayAlive()

	// Signals first: the kernel may send SIGINT (ctrl-alt-del) at any time after CAD_OFF, and a
	// power request during boot must not be lost.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGUSR1, unix.SIGUSR2)
	// A write to a console pipe whose reader is gone must fail with EPIPE, not end PID 1
	// (Go's default for fds 1 and 2). Never read: logging it would write to the pipe again.
	signal.Notify(make(chan os.Signal, 1), unix.SIGPIPE)
	go m.powerSignals(sigs)
	if err := system.CloseInheritedOnExec(); err != nil {
		m.log.Warn("fds the kernel or an initramfs left open may reach the services", "err", err)
	}
	// The kernel gives PID 1 1,024/4,096 fds; the remote API keeps a reserve below the limit
	// for supervising, which only means something with room above it.
	if _, err := system.RaiseFDLimit(); err != nil {
		m.log.Warn("fd limit not raised", "err", err)
	}
	m.reaper = system.NewReaper(m.log)
	m.starts = newStartSlots(runtime.NumCPU())
	m.log.Info("baton starting as PID 1", "kernel_to_init", m.initAt.Round(time.Millisecond), system.KmsgKey, true)

	steps := runSteps(m.log, m.bootLine())
	steps = append(steps, runGraph(m.log, m.bootGraph())...)
	failed := 0
	for _, s := range steps {
		if s.Err != nil {
			failed++
		}
	}
	total := system.Uptime()
	m.mu.Lock()
	m.steps, m.readyAt = steps, total
	m.mu.Unlock()
	m.log.Info("all services started", "kernel_to_init", m.initAt.Round(time.Millisecond),
		"init_to_services", (total - m.initAt).Round(time.Millisecond),
		"kernel_to_services", total.Round(time.Millisecond), "failed_steps", failed, system.KmsgKey, true)

	for action := range m.power {
		m.powerAction(action)
		// Only reached when reboot(2) failed: keep running and reaping, and listen again.
	}
}

// powerAction shuts down and powers off, reboots or jumps. A panic on the way is a bug in
// baton: it is reported and the machine comes back as after a failed power action (services
// started again, power requests accepted again), instead of being left half shut down.
func (m *machine) powerAction(action system.PowerAction) {
	defer func() {
		if p := recover(); p != nil {
			system.LogPanic(m.log, "shutdown ("+action.String()+")", p)
			system.Contain(m.log, "recovery after a failed shutdown", m.recover)
		}
	}()
	m.shutdown(action)
}

// newMachine is PID 1's state before the boot; it logs to console, and to the kernel log
// once mountBase has made /dev/kmsg.
func newMachine(console io.Writer) *machine {
	m := &machine{initAt: system.Uptime(), level: new(slog.LevelVar), power: make(chan system.PowerAction, 1),
		modulesDone: make(chan struct{})}
	m.bootWall = time.Now().Add(-m.initAt)
	m.console = system.NewConsoleHandler(console, nil, m.level)
	m.log = slog.New(m.console)
	return m
}

// powerSignals turns power signals into requests for as long as PID 1 runs.
func (m *machine) powerSignals(sigs <-chan os.Signal) {
	for sig := range sigs {
		system.Contain(m.log, "power signal", func() {
			s := sig.(unix.Signal)
			_ = m.requestPower("signal "+unix.SignalName(s), actionFor(s), nil)
		})
	}
}

// requestPower is how every power request (signal, power button, control API, kexec) reaches
// the main loop. The first one is accepted; the others are refused until it has failed, so a
// burst of signals cannot fill the channel. It never blocks and sends under no lock: the
// signal goroutine and API handlers must never wait for a boot that has not finished.
func (m *machine) requestPower(via string, a system.PowerAction, k *pendingKexec) error {
	m.mu.Lock()
	refused := m.shutting
	if !refused {
		m.shutting, m.kexec = true, k
	}
	m.mu.Unlock()
	if refused {
		m.log.Info("power request refused: a shutdown is already pending or under way", "via", via, "action", a.String())
		return fmt.Errorf("%s: a shutdown is already pending or under way", a)
	}
	m.log.Info("power request", "via", via, "action", a.String(), system.KmsgKey, true)
	select {
	case m.power <- a: // always room: only an accepted request is sent, and the loop took the last
	default:
		m.log.Error("power request lost: the channel is full; this is a bug", "action", a.String())
	}
	return nil
}

// stayAlive is PID 1's last line: whatever went wrong is printed, and the process keeps
// reaping instead of exiting and panicking the kernel.
func (m *machine) stayAlive() {
	if p := recover(); p != nil {
		m.log.Error("PID 1 recovered from a fatal error; staying up", "panic", fmt.Sprint(p))
	}
	select {}
}

func actionFor(sig unix.Signal) system.PowerAction {
	switch sig {
	case unix.SIGUSR1:
		return system.Halt
	case unix.SIGUSR2:
		return system.Poweroff
	default: // SIGTERM and SIGINT (ctrl-alt-del), as sysvinit and busybox do
		return system.Reboot
	}
}

// watchPowerButton turns an ACPI power button press into a poweroff.
func (m *machine) watchPowerButton() error {
	n := system.WatchPowerButton(m.log, func() { _ = m.requestPower("power button", system.Poweroff, nil) })
	if n == 0 {
		m.log.Debug("no ACPI power button (the button and evdev modules in [boot] modules make one)")
	}
	return nil
}

func (m *machine) mountConfigured() error {
	if m.cfg == nil || len(m.cfg.Mount) == 0 {
		return nil
	}
	err := system.MountConfigured(m.log, m.cfg.Mount)
	m.loadPreviousShutdown()
	return err
}

func (m *machine) setupCgroups() error {
	cg, err := services.SetupCgroups("/sys/fs/cgroup/baton")
	m.cgroups = cg
	return err
}

func (m *machine) mountBase() error {
	failed := system.MountAll(m.log, system.BaseMounts)
	// /dev/kmsg exists now: from here on the kernel log (dmesg) gets our lines too.
	if k := system.OpenKmsg(); k != nil {
		m.console.SetKmsg(k)
	}
	if failed > 0 {
		return fmt.Errorf("%d base mounts failed (see above)", failed)
	}
	return nil
}

func (m *machine) readCmdline() error {
	c, err := system.ReadCmdline()
	if err != nil {
		return fmt.Errorf("read /proc/cmdline: %w", err)
	}
	m.cmdline = c
	if _, ok := c.Get("baton.debug"); ok {
		m.level.Set(slog.LevelDebug)
	}
	m.configPath = config.DefaultPath
	if p, ok := c.Get("baton.config"); ok && p != "" {
		m.configPath = p
	}
	return nil
}

func (m *machine) loadConfig() error {
	cfg, err := config.LoadFor(m.configPath, system.Accounts())
	if err != nil {
		// Each problem on its own console line; the boot goes on without services so the
		// machine stays reachable for whoever fixes it.
		for _, line := range strings.Split(err.Error(), "\n") {
			m.log.Error("config error", "problem", line)
		}
		return fmt.Errorf("config %s not loaded; booting without its services", m.configPath)
	}
	m.cfg = cfg
	m.log.Info("config loaded", "path", m.configPath, "services", len(cfg.Service))
	return nil
}

func (m *machine) setHostname() error {
	name := "baton"
	if m.cfg != nil && m.cfg.Hostname != "" {
		name = m.cfg.Hostname
	}
	if v, ok := m.cmdline.Get("baton.hostname"); ok && v != "" {
		name = v
	}
	return system.SetHostname(name)
}

func (m *machine) loadModules() error {
	// However it ends (a panic too): the network's wait for its interface counts from here.
	defer m.modulesLoaded()
	// Answer the kernel's on-demand requests (fs-*, crypto-*, net-pf-*) with this binary.
	if err := os.WriteFile("/proc/sys/kernel/modprobe", []byte(modprobePath), 0); err != nil {
		m.log.Warn("cannot set the kernel's modprobe helper", "err", err)
	}
	loader := m.modules // startReachModules made it, and is loading the network's drivers
	if loader == nil {
		l, err := newModuleLoader(m.log)
		if err != nil {
			return err
		}
		loader, m.modules = l, l
	}
	m.keepWatchdogAcrossKexec(loader)
	var want []string
	if m.cfg != nil {
		want = append(want, m.cfg.Boot.Modules...)
	}
	if v, ok := m.cmdline.Get("baton.modules"); ok && v != "" {
		want = append(want, strings.Split(v, ",")...)
	}
	// The listed modules and those of the devices present load together, a few at a time. The
	// network card's driver and its bus come first, ahead of the services (ReachNice): the
	// services are reached through them. The rest load at low priority, so the services'
	// start gets the CPU before them, which matters on a machine with one CPU.
	var reached []string
	if m.reachLoaded != nil {
		// One CPU's worth of loads at a time: the rest waits for the network's drivers.
		reached = <-m.reachLoaded
	}
	m.waitForEarlyServices()
	loaded, err := loader.Coldplug(want...)
	loaded = append(reached, loaded...)
	isListed := map[string]bool{}
	for _, w := range want {
		if order, err := loader.Index.Order(w); err == nil {
			for _, n := range order {
				isListed[n] = true
			}
		}
	}
	var listed, plugged []string
	for _, n := range loaded {
		if isListed[n] {
			listed = append(listed, n)
		} else {
			plugged = append(plugged, n)
		}
	}
	m.log.Info("modules loaded", "listed", strings.Join(listed, ","), "for_devices", strings.Join(plugged, ","))
	return err
}

// modulesHold bounds how long the module step waits for the services that start early.
const modulesHold = 2 * startSlotHold

// waitForEarlyServices holds the module step until the services that start early have had
// their turn (startSlots.settled), for modulesHold at most. A module's probe is kernel CPU that
// a lower priority does not take back: Debian's kernel preempts voluntarily, so a nice-10 probe
// runs to its end once it has the CPU. Under QEMU with one CPU, binding the other PCI devices
// (the disk, the RNG: their ACPI interrupt links) at nice 10 took 1.3 s beside web's start, and
// web was ready 720 ms after its start instead of about 440. Nothing the early services need is
// among these modules: a service below a [[mount]] waits for the mounts, and those for this
// step; the network's drivers load first (startReachModules); on-demand loads (a service
// opening /dev/net/tun) are answered at once by the kernel's modprobe helper.
//
// It does not also wait for an idle CPU, as it did for a while: the gain (first answers not
// held up by a probe) was never shown, and the cost was: services below a [[mount]] started
// up to 2 s later, and so did the hardware RNG's driver — the remote API refuses TLS until the
// kernel's random pool is ready, and a client that kept trying kept the CPU busy for the whole
// 2 s (bench-handoff's phases then ran against refusals).
func (m *machine) waitForEarlyServices() {
	if m.starts == nil || m.cfg != nil && m.cfg.Watchdog.Device != "" {
		return // a watchdog's driver is among these modules, and its timer may be counting
	}
	began := time.Now()
	t := time.NewTimer(modulesHold)
	defer t.Stop()
	select {
	case <-m.starts.settled():
	case <-t.C:
	}
	if w := time.Since(began); w > 10*time.Millisecond {
		m.mu.Lock()
		m.modulesWaited = w
		m.mu.Unlock()
	}
}

// modulesHeldBy says how long the module step waited for the early services, if it did.
func (m *machine) modulesHeldBy() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.modulesWaited > 0 {
		return fmt.Sprintf("the services' start (%s)", m.modulesWaited.Round(time.Millisecond))
	}
	return ""
}

// startReachModules starts loading the network card's driver and its bus (reachModule), with
// what they depend on, for the devices present, before the config is read. Under TCG their
// probe takes about a second of CPU; the network that comes up before the services are ready
// lets clients' connections wait in the held sockets' backlog instead of in their own SYN
// retries. loadModules then loads the rest, and what the config lists.
func (m *machine) startReachModules() error {
	loader, err := newModuleLoader(m.log)
	if err != nil {
		return err // loadModules tries again, and reports it
	}
	m.modules = loader
	done := make(chan []string, 1)
	m.reachLoaded = done
	go func() {
		var loaded []string
		defer func() { done <- loaded }()
		system.Contain(m.log, "loading the network's drivers", func() {
			loaded, _ = loader.ColdplugUrgent() // each failure is logged by the loader
		})
	}()
	return nil
}

// newModuleLoader is the boot's loader: the network card's drivers first and ahead of the
// services (ReachNice), binding the PCI network controllers before the other PCI devices; the
// rest at BackgroundNice.
func newModuleLoader(log *slog.Logger) (*kmod.Loader, error) {
	l, err := kmod.NewLoader("/", log)
	if err != nil {
		return nil, err
	}
	l.Nice = system.BackgroundNice
	l.Urgent = reachModule
	l.UrgentNice = system.ReachNice
	l.NetworkPCIFirst = true
	return l, nil
}

// reachModule tells the modules that load first: network drivers and the virtio transport
// (without which a virtual machine's network card never appears), with what they depend on.
func reachModule(name, path string) bool {
	return strings.Contains(path, "/drivers/net/") || strings.HasPrefix(name, "virtio_pci")
}

// modulesLoaded closes modulesDone once.
func (m *machine) modulesLoaded() {
	m.modulesOnce.Do(func() { close(m.modulesDone) })
}

func (m *machine) configureNetwork() error {
	errs := []error{}
	if err := system.LoopbackUp(); err != nil {
		errs = append(errs, err)
	}
	if m.cfg != nil {
		for _, n := range m.cfg.Network {
			if err := system.ConfigureInterfaceAfter(m.log, n, m.modulesDone, 5*time.Second); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// startControl prepares the supervisor and serves the API before any service starts, so
// initctl works while services come up.
func (m *machine) startControl() error {
	cfg := m.cfg
	if cfg == nil {
		cfg = &config.Config{}
	}
	sv, err := services.New(cfg, services.Options{Log: m.log, Reaper: m.reaper, Console: os.Stdout,
		RunDir: runDir, Cgroups: m.cgroups})
	if err != nil {
		return err
	}
	m.sv = sv
	m.srv = &control.Server{SV: sv, Log: m.log, Timeline: m.timeline, Kexec: m.kexecRequest,
		Power:        func(a system.PowerAction) error { return m.requestPower("control API", a, nil) },
		ReloadConfig: configReloader(m.log, sv, m.configPath), ConfigFile: m.configPath, Update: m.updater.Load}
	m.srv.Reexec = m.newReexecer() // reexec_pid1.go
	if startLocalControl(m.log, m.srv, runDir) == nil {
		return fmt.Errorf("no control API")
	}
	return nil
}

func (m *machine) startRemoteControl() error {
	if m.srv == nil || m.cfg == nil || m.cfg.Control.Remote == "" {
		return nil
	}
	_, err := startRemoteControl(m.log, m.srv, m.cfg)
	return err
}

func (m *machine) timeline() control.Timeline {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := control.Timeline{PID1: true, KernelToInit: m.initAt, Steps: stepTimeline(m.steps),
		Previous: m.previous, PreviousAction: m.previousAction, PreviousKexec: m.previousKexec}
	if m.readyAt > 0 {
		t.InitToReady = m.readyAt - m.initAt
	}
	if m.sv != nil {
		t.Services = serviceTimeline(m.sv, m.bootWall)
	}
	if u := m.updater.Load(); u != nil {
		if last := u.Status().Last; last != nil && last.State == update.StateRolledBack {
			t.Update = fmt.Sprintf("update to %s rolled back: %s", last.To, last.Reason)
		}
	}
	return t
}
