package main

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/system"
)

// The boot steps others wait for, by name.
const (
	stepModules  = "load kernel modules"
	stepMounts   = "mount file systems"
	stepCgroups  = "set up cgroups"
	stepControl  = "start control API"
	stepNetwork  = "configure network"
	stepHostname = "set hostname"
	stepUpdates  = "prepare updates"
)

// bootLine runs first, one step after the other: everything after it needs the config, and
// the config needs /proc (the command line may name it) and /etc/passwd.
func (m *machine) bootLine() []step {
	return []step{
		{name: "mount base file systems", run: m.mountBase},
		{name: "read kernel command line", run: m.readCmdline},
		// Started here, not waited for: the network card's probe is the longest wait of a
		// virtual machine's boot, and needs no config.
		{name: "start network drivers", run: m.startReachModules},
		{name: "load config", run: m.loadConfig},
	}
}

// bootGraph is the rest of the boot: each step names what it waits for and starts as soon as
// that is done (runGraph), so the services start while modules load and the network comes up.
func (m *machine) bootGraph() []step {
	steps := []step{
		{name: "ctrl-alt-del to SIGINT", run: system.CtrlAltDelToSignal},
		{name: stepHostname, run: m.setHostname},
		// The loader lowers what is not urgent, and waits for the services that start early.
		{name: stepModules, run: m.loadModules, heldBy: m.modulesHeldBy},
		// As early as the device can exist: after a kexec the old kernel's timer is counting.
		{name: "start watchdog", after: []string{stepModules}, run: m.startWatchdog},
		{name: stepMounts, after: []string{stepModules}, background: true, run: m.mountConfigured},
		{name: "watch power button", after: []string{stepModules}, background: true, run: m.watchPowerButton},
		{name: stepCgroups, run: m.setupCgroups},
		// Binds the services' held sockets too, and serves initctl while the services start.
		{name: stepControl, after: []string{stepCgroups}, run: m.startControl},
		// After the held sockets are bound: no SYN meets an address without a listener.
		// Carried connections (carry_boot.go): locked before the interface is up, rebuilt
		// once it is; their services wait for them.
		{name: stepCarryLock, after: []string{stepMounts}, run: m.lockCarried},
		{name: stepNetwork, after: m.networkAfter(), run: m.configureNetwork},
		{name: stepCarryRestore, after: []string{stepNetwork, stepCarryLock}, run: m.restoreCarried},
		// The updater reads the image slots on /boot.
		{name: stepUpdates, after: []string{stepControl, stepMounts}, background: true, run: m.prepareUpdates},
	}
	services, early := m.serviceSteps()
	steps = append(steps, services...)
	all := make([]string, 0, len(services)+1)
	for _, s := range services {
		all = append(all, s.name)
	}
	steps = append(steps,
		// A boot on trial (a kexec update) confirms itself once its services are ready, or
		// goes back; the boot does not wait for that.
		step{name: "confirm update", after: append(all, stepUpdates), run: m.confirmUpdate},
		// After the services that start early: its TLS setup is CPU their start should not
		// wait for. An address of its own needs the network.
		step{name: "start remote control API", after: m.remoteAfter(early), background: true, run: m.startRemoteControl})
	return steps
}

// serviceSteps are one step per configured service, in start order, each waiting for the
// supervisor (its held sockets bound), the services it is ordered after, and what it says it
// needs: the network (needs_network) or a [[mount]] below which it has files. early lists
// those that wait for neither, directly or through another service.
func (m *machine) serviceSteps() (steps []step, early []string) {
	if m.cfg == nil {
		return nil, nil
	}
	late, configured := map[string]bool{}, map[string]bool{}
	for _, s := range m.cfg.Service {
		configured[s.Name] = true
	}
	for _, s := range m.cfg.StartOrder() {
		after := []string{stepHostname, stepControl}
		isLate := false
		if s.NeedsNetwork {
			after, isLate = append(after, stepNetwork), true
		}
		if s.KeepConnections && m.carryPending() {
			after, isLate = append(after, stepCarryRestore), true
		}
		if mnt := usesMount(s, m.cfg.Mount); mnt != "" {
			after, isLate = append(after, stepMounts), true
		}
		for _, d := range s.Deps() {
			if !configured[d] {
				continue
			}
			after = append(after, serviceStep(d))
			isLate = isLate || late[d]
		}
		late[s.Name] = isLate
		if !isLate {
			early = append(early, serviceStep(s.Name))
			if m.starts != nil {
				m.starts.expect(len(steps))
			}
		}
		steps = append(steps, step{name: serviceStep(s.Name), after: after, service: s.Name,
			run: m.startService(s.Name, len(steps)), heldBy: m.startHeldBy(s.Name)})
	}
	return steps, early
}

func serviceStep(name string) string { return "start service " + name }

func (m *machine) startService(name string, rank int) func() error {
	return func() error {
		if m.sv == nil {
			return fmt.Errorf("no supervisor (see %q)", stepControl)
		}
		if m.starts != nil {
			began := time.Now()
			done := m.starts.take(rank, startSlotHold)
			defer done()
			if w := time.Since(began); w > 10*time.Millisecond {
				m.log.Info("service start waited for a CPU", "service", name, "waited", w.Round(time.Millisecond))
				m.mu.Lock()
				if m.slotWaits == nil {
					m.slotWaits = map[string]time.Duration{}
				}
				m.slotWaits[name] = w
				m.mu.Unlock()
			}
		}
		if r := m.sv.StartOne(name); r.Err != nil {
			return r.Err
		}
		return nil
	}
}

// startHeldBy says how long the service's start waited for a CPU (startSlots), if it did.
func (m *machine) startHeldBy(name string) func() string {
	return func() string {
		m.mu.Lock()
		w, ok := m.slotWaits[name]
		m.mu.Unlock()
		if !ok {
			return ""
		}
		return fmt.Sprintf("a CPU (%s)", w.Round(time.Millisecond))
	}
}

// startSlotHold is how long a starting service keeps its CPU slot (startSlots) at most: one
// that takes longer to be ready, or waits for something, does not hold the others up longer.
const startSlotHold = time.Second

// startSlots lets the boot start at most one service per CPU at a time: a service's start is
// mostly CPU (a Go program under emulation: half a second before it listens), and more starts
// than CPUs only share them, so each is ready later. Measured with the demo under QEMU with one
// CPU: web and stream started together were ready 1.42–1.45 s after /init; web started first
// was ready after 1.17–1.33 s, stream about 0.4 s after it. The next service starts when one is
// ready (or has failed), or when one has held its slot for startSlotHold. Slots go in the
// configured start order (rank): to the first waiting service, unless one before it that
// starts early (expect) has not asked yet — the early ones become startable at the same moment
// and would otherwise race for the first slot.
type startSlots struct {
	mu       sync.Mutex
	free     int
	waiting  []slotWaiter // by rank
	expected map[int]bool // ranks that will ask and have not yet
	// earlyLeft counts the expected ranks that have not given their slot back yet; settledCh
	// is closed when it reaches zero (settled).
	earlyLeft int
	settledCh chan struct{}
}

type slotWaiter struct {
	rank int
	turn chan struct{}
}

func newStartSlots(n int) *startSlots {
	return &startSlots{free: max(n, 1), expected: map[int]bool{}, settledCh: make(chan struct{})}
}

// expect says which ranks will ask for a slot soon.
func (s *startSlots) expect(ranks ...int) {
	s.mu.Lock()
	for _, r := range ranks {
		if !s.expected[r] {
			s.expected[r] = true
			s.earlyLeft++
		}
	}
	s.mu.Unlock()
}

// settled is closed once every expected rank has had its slot and given it back: the services
// that start early are ready, have failed, or have held their slot for the hold time. The
// boot's background work waits for it (loadModules), so it does not take the CPU from them.
// With nothing expected it is closed at once.
func (s *startSlots) settled() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleIfDone()
	return s.settledCh
}

// settleIfDone closes settledCh when no expected rank is left; s.mu is held.
func (s *startSlots) settleIfDone() {
	if s.earlyLeft == 0 {
		select {
		case <-s.settledCh:
		default:
			close(s.settledCh)
		}
	}
}

// take waits for a slot. The slot goes back when done is called or after hold, whichever
// comes first, and only once.
func (s *startSlots) take(rank int, hold time.Duration) (done func()) {
	w := slotWaiter{rank, make(chan struct{})}
	s.mu.Lock()
	early := s.expected[rank]
	delete(s.expected, rank)
	i, _ := slices.BinarySearchFunc(s.waiting, rank, func(a slotWaiter, r int) int { return cmp.Compare(a.rank, r) })
	s.waiting = slices.Insert(s.waiting, i, w)
	s.dispatch()
	s.mu.Unlock()
	<-w.turn
	var once sync.Once
	give := func() {
		once.Do(func() {
			s.mu.Lock()
			s.free++
			if early {
				s.earlyLeft--
				s.settleIfDone()
			}
			s.dispatch()
			s.mu.Unlock()
		})
	}
	t := time.AfterFunc(hold, give)
	return func() { t.Stop(); give() }
}

// dispatch hands free slots to the waiting services in rank order; s.mu is held.
func (s *startSlots) dispatch() {
	for s.free > 0 && len(s.waiting) > 0 {
		first := s.waiting[0]
		for r := range s.expected {
			if r < first.rank {
				return // an earlier service is about to ask
			}
		}
		s.waiting = s.waiting[1:]
		s.free--
		close(first.turn)
	}
}

// usesMount returns the target of a [[mount]] that holds a file the service needs at start
// (its program, directory, environment files, unix sockets, state and log directories), or "".
func usesMount(s config.Service, mounts []config.Mount) string {
	var paths []string
	if len(s.Exec) > 0 {
		paths = append(paths, s.Exec[0])
	}
	paths = append(paths, s.Dir, s.PIDFile)
	for _, f := range s.EnvironmentFile {
		paths = append(paths, strings.TrimPrefix(f, "-"))
	}
	for _, d := range []struct{ base, name string }{{"/var/lib", s.StateDir}, {"/run", s.RuntimeDir}, {"/var/log", s.LogsDir}} {
		if d.name != "" {
			paths = append(paths, filepath.Join(d.base, d.name))
		}
	}
	for _, so := range s.Socket {
		if l, err := config.ParseListen(so.Listen); err == nil && l.IsUnix() {
			paths = append(paths, l.Address)
		}
	}
	for _, mnt := range mounts {
		for _, p := range paths {
			if p != "" && filepath.IsAbs(p) && under(p, mnt.Target) {
				return mnt.Target
			}
		}
	}
	return ""
}

func under(path, dir string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// remoteAfter is what the remote control API waits for: the control API, the services that
// start early, and the network when it listens on an address of its own.
func (m *machine) remoteAfter(early []string) []string {
	after := append([]string{stepControl}, early...)
	if m.cfg == nil {
		return after
	}
	if host, _, err := net.SplitHostPort(m.cfg.Control.Remote); err == nil && host != "" {
		if ip, err := netip.ParseAddr(host); err != nil || !ip.IsUnspecified() {
			after = append(after, stepNetwork)
		}
	}
	return after
}

func (m *machine) prepareUpdates() error {
	if m.sv == nil {
		return fmt.Errorf("no supervisor (see %q)", stepControl)
	}
	m.updater.Store(m.newUpdater())
	return nil
}

func (m *machine) confirmUpdate() error {
	if u := m.updater.Load(); u != nil {
		go system.Contain(m.log, "update confirmation", u.ConfirmTrial)
	}
	return nil
}
