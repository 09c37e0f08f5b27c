package kmod

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/system"
)

// Loader loads modules from an index with finit_module(2).
type Loader struct {
	Index *Index
	Dir   string // /lib/modules/<release>
	Log   *slog.Logger
	// Params are module parameters by module name ("stop_on_reboot=0"), what modprobe.d's
	// options lines give modprobe. Set before the first Load.
	Params map[string]string
	// Nice: module loads run on threads at this nice value (0: the caller's priority), all but
	// the urgent ones.
	Nice int
	// Urgent tells the modules that load first, at UrgentNice, with what they depend on (the
	// network card's driver and its bus: what the services need to be reached). path is
	// relative to Dir.
	Urgent func(name, path string) bool
	// UrgentNice is the nice value of the urgent loads (0: the caller's priority). Below the
	// caller's needs CAP_SYS_NICE; without it they run at the caller's.
	UrgentNice int
	// Parallel is how many modules load at once (0: one per CPU).
	Parallel int
	// NetworkPCIFirst: when ColdplugUrgent loads a PCI driver, it binds it to the PCI network
	// controllers only (class 0x02); the other PCI devices are bound by the Coldplug that
	// follows, at Nice. A PCI driver binds every device it matches as it loads, in the
	// loading thread: virtio_pci probes the random number generator (about 0.3 s under TCG,
	// most of it the ACPI interrupt link) after the network card, and that is not urgent.
	NetworkPCIFirst bool
	// SysDir is where sysfs is (tests; "" is /sys).
	SysDir string

	mu         sync.Mutex
	pciHeld    bool // ColdplugUrgent left PCI devices unbound for Coldplug to bind
	loaded     map[string]bool
	loading    map[string]chan struct{} // closed when that module's load has ended
	insertFunc func(name string) error  // tests: instead of finit_module
	// tests: instead of reading sysfs
	modaliasFunc func(buses []string, all bool) []string
}

// NewLoader returns a loader for the modules of the running kernel below root.
func NewLoader(root string, log *slog.Logger) (*Loader, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return nil, fmt.Errorf("uname: %w", err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	ix, err := ReadIndex(root, release)
	if err != nil {
		return nil, err
	}
	l := &Loader{Index: ix, Dir: Dir(root, release), Log: log, loaded: map[string]bool{}, loading: map[string]chan struct{}{}}
	l.readProcModules()
	ix.indexAliases() // built now: loads that overlap only read the tables
	return l, nil
}

// SetParams sets Params, also while modules load (ColdplugUrgent before the config is read).
func (l *Loader) SetParams(p map[string]string) {
	l.mu.Lock()
	l.Params = p
	l.mu.Unlock()
}

func (l *Loader) readProcModules() {
	b, err := os.ReadFile("/proc/modules")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			l.loaded[Name(f[0])] = true
		}
	}
}

// Load loads the named modules and their dependencies, each module after its dependencies.
// Modules that do not depend on each other load at the same time, one per CPU: finit_module
// runs the module's init, a driver's probe included, in the caller, and more loads than CPUs
// only share them. Measured under QEMU with one CPU: a dozen modules loaded all at once took
// 20 times longer each (fat 0.4 s instead of 0.03 s), and the network card's bus driver came
// a second later than loaded one by one. Among the modules
// ready to load, the urgent ones (Urgent, and what they depend on) go first and run at the
// caller's priority; the others run at Nice. It returns the modules it loaded now, in
// dependency order, and the first error (it goes on past a failed module).
func (l *Loader) Load(names ...string) ([]string, error) {
	order, err := l.Index.Order(names...)
	if err != nil {
		return nil, err
	}
	at := make(map[string]int, len(order))
	for i, name := range order {
		at[name] = i
	}
	waits := make([][]int, len(order)) // what each module waits for, by index in order
	for i, name := range order {
		for _, d := range l.Index.needs(name) {
			if j, ok := at[d]; ok {
				waits[i] = append(waits[i], j)
			}
		}
		for _, p := range l.Index.Modules[name].Post { // a post soft dependency waits for its module
			if j, ok := at[Name(p)]; ok {
				waits[j] = append(waits[j], i)
			}
		}
	}
	urgent := make([]bool, len(order))
	for i := len(order) - 1; i >= 0; i-- { // dependents come after their dependencies
		if l.Urgent != nil && l.Urgent(order[i], l.Index.Modules[order[i]].Path) {
			urgent[i] = true
		}
		if urgent[i] {
			for _, j := range waits[i] {
				urgent[j] = true
			}
		}
	}
	limit := runtime.NumCPU()
	if l.Parallel > 0 {
		limit = l.Parallel
	}
	type result struct {
		i   int
		now bool
		err error
	}
	ended := make([]bool, len(order))
	started := make([]bool, len(order))
	loadedNow := make([]bool, len(order))
	errs := make([]error, len(order))
	results := make(chan result)
	ready := func(i int) bool {
		for _, j := range waits[i] {
			if !ended[j] {
				return false
			}
		}
		return true
	}
	running, left := 0, len(order)
	for left > 0 {
		for running < limit {
			pick := -1
			for i := range order {
				if started[i] || !ready(i) {
					continue
				}
				if pick < 0 || urgent[i] && !urgent[pick] {
					pick = i
				}
				if urgent[pick] {
					break
				}
			}
			if pick < 0 && running == 0 {
				// Nothing running and nothing ready: the soft dependencies make a cycle. Load
				// the first waiting module anyway rather than wait for ever.
				for i := range order {
					if !started[i] {
						pick = i
						break
					}
				}
			}
			if pick < 0 {
				break
			}
			started[pick] = true
			running++
			go func(i int) {
				nice := l.Nice
				if urgent[i] {
					nice = l.UrgentNice
				}
				if nice != 0 || l.Nice != 0 {
					// A thread of its own at that priority (the caller's may be lowered).
					_ = system.SetThreadPriority(nice)
				}
				now, err := l.loadOne(order[i])
				results <- result{i, now, err}
			}(pick)
		}
		r := <-results
		running--
		left--
		ended[r.i], loadedNow[r.i], errs[r.i] = true, r.now, r.err
	}
	var done []string
	var first error
	for i, name := range order {
		if loadedNow[i] {
			done = append(done, name)
		}
		if errs[i] != nil && first == nil {
			first = errs[i]
		}
	}
	return done, first
}

// loadOne loads a module unless it is loaded or being loaded; then it waits for that load.
func (l *Loader) loadOne(name string) (bool, error) {
	l.mu.Lock()
	if l.loaded[name] {
		l.mu.Unlock()
		return false, nil
	}
	if ch, ok := l.loading[name]; ok {
		l.mu.Unlock()
		<-ch
		return false, nil
	}
	ch := make(chan struct{})
	l.loading[name] = ch
	l.mu.Unlock()

	start := time.Now()
	insert := l.insert
	if l.insertFunc != nil {
		insert = l.insertFunc
	}
	err := insert(name)
	l.mu.Lock()
	delete(l.loading, name)
	if err == nil {
		l.loaded[name] = true
	}
	l.mu.Unlock()
	close(ch)
	if err != nil {
		l.Log.Error("module load failed", "module", name, "err", err)
		return false, err
	}
	l.Log.Debug("module loaded", "module", name, "took", time.Since(start))
	return true, nil
}

func (l *Loader) insert(name string) error {
	p := filepath.Join(l.Dir, l.Index.Modules[name].Path)
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("load module %s: %w", name, err)
	}
	defer f.Close()
	l.mu.Lock()
	params := l.Params[name]
	l.mu.Unlock()
	err = unix.FinitModule(int(f.Fd()), params, 0)
	switch {
	case err == nil, errors.Is(err, unix.EEXIST):
		return nil
	case errors.Is(err, unix.ENOEXEC):
		return fmt.Errorf("finit_module(%s): %w — built for another kernel? (image modules must match uname -r)", p, err)
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENODEV):
		// Drivers for absent hardware refuse to load; that is not a failure of the boot.
		return fmt.Errorf("finit_module(%s): %w — no such device for this driver", p, err)
	default:
		return fmt.Errorf("finit_module(%s): %w", p, err)
	}
}

// Coldplug does what udev does at boot: load the module of every device present whose
// modalias matches an alias in the index. Loading a bus driver (virtio_pci) makes new devices
// appear (virtio0), so it repeats until a pass loads nothing new. The first pass loads the
// modules listed too, in one Load with the devices' modules: a bus driver the devices need
// then loads from the start, urgent or not, instead of after a scan that shares the CPU with
// the listed modules' loads.
func (l *Loader) Coldplug(listed ...string) ([]string, error) {
	l.bindHeldPCI()
	var all []string
	var first error
	for pass := 0; pass < 5; pass++ {
		want := map[string]bool{}
		if pass == 0 {
			for _, m := range listed {
				// One the index lacks is an error of its own, not one for the whole pass.
				if _, err := l.Index.Order(m); err != nil {
					l.Log.Error("module load failed", "module", m, "err", err)
					first = cmp.Or(first, err)
					continue
				}
				want[Name(m)] = true
			}
		}
		// Buses whose drivers are all loaded already (listed in the config) need no scan. The
		// first pass scans only the buses of urgent modules (pci for virtio_pci), if any: the
		// scan is slow under emulation, and the network card's bus driver waits for it.
		restricted := pass == 0 && l.Urgent != nil
		l.mu.Lock()
		buses, anyBus := l.Index.Buses(func(m string) bool {
			return l.loaded[m] || restricted && !l.Urgent(m, l.Index.Modules[m].Path)
		})
		l.mu.Unlock()
		if len(buses) > 0 || anyBus {
			began := time.Now()
			aliases := l.scan(buses, anyBus)
			l.Log.Debug("devices scanned", "buses", strings.Join(buses, ","), "all", anyBus, "devices", len(aliases), "took", time.Since(began))
			for _, alias := range aliases {
				for _, m := range l.Index.Match(alias) {
					want[m] = true
				}
			}
		}
		var names []string
		l.mu.Lock()
		for m := range want {
			if !l.loaded[m] {
				names = append(names, m)
			}
		}
		l.mu.Unlock()
		if len(names) == 0 {
			if restricted {
				continue // the full scan comes next
			}
			break
		}
		sort.Strings(names)
		done, err := l.Load(names...)
		all = append(all, done...)
		if err != nil && first == nil {
			first = err
		}
		// Scan again if any of them is loaded now, by this pass or by a load that was already
		// under way (a listed virtio_pci that the first scan also matched): its devices (virtio
		// ones on the virtio bus) appeared since the scan. Only a pass whose modules all failed
		// ends the loop here.
		if !restricted && !l.anyLoaded(names) {
			break
		}
	}
	return all, first
}

// ColdplugUrgent is Coldplug for the urgent modules alone (Urgent): it scans only their
// buses and loads only them, with what they depend on, until a pass finds nothing new. A boot
// runs it before its configuration is read, so the network card's bus and driver load while
// the rest of the boot gets ready; the Coldplug that follows skips what it loaded, and waits
// for a load still under way.
func (l *Loader) ColdplugUrgent() ([]string, error) {
	if l.Urgent == nil {
		return nil, nil
	}
	urgent := func(m string) bool { return l.Urgent(m, l.Index.Modules[m].Path) }
	var all []string
	var first error
	for pass := 0; pass < 5; pass++ {
		l.mu.Lock()
		buses, _ := l.Index.Buses(func(m string) bool { return l.loaded[m] || !urgent(m) })
		l.mu.Unlock()
		if len(buses) == 0 {
			break
		}
		began := time.Now()
		aliases := l.scan(buses, false)
		l.Log.Debug("devices scanned", "buses", strings.Join(buses, ","), "urgent", true, "devices", len(aliases), "took", time.Since(began))
		want := map[string]bool{}
		l.mu.Lock()
		for _, alias := range aliases {
			for _, m := range l.Index.Match(alias) {
				if urgent(m) && !l.loaded[m] {
					want[m] = true
				}
			}
		}
		l.mu.Unlock()
		if len(want) == 0 {
			break
		}
		names := make([]string, 0, len(want))
		for m := range want {
			names = append(names, m)
		}
		sort.Strings(names)
		held := l.NetworkPCIFirst && l.anyPCIDriver(names) && l.setPCIAutoprobe(false)
		done, err := l.Load(names...)
		if held {
			// The network controllers now, at the urgent loads' priority (each probe runs in
			// the writing thread); then the bus binds as it did before, and Coldplug binds
			// what was left.
			l.atNice(l.UrgentNice, func() {
				l.bindPCI(func(class string) bool { return strings.HasPrefix(class, "0x02") })
			})
			l.setPCIAutoprobe(true)
			l.mu.Lock()
			l.pciHeld = true
			l.mu.Unlock()
		}
		all = append(all, done...)
		first = cmp.Or(first, err)
		if !l.anyLoaded(names) {
			break
		}
	}
	return all, first
}

func (l *Loader) sys(p string) string { return filepath.Join(cmp.Or(l.SysDir, "/sys"), p) }

// anyPCIDriver tells whether one of names drives PCI devices.
func (l *Loader) anyPCIDriver(names []string) bool {
	for _, n := range names {
		for _, a := range l.Index.Modules[n].Aliases {
			if strings.HasPrefix(a, "pci:") {
				return true
			}
		}
	}
	return false
}

// setPCIAutoprobe turns the PCI bus's binding of devices to a driver as it registers on or
// off, and tells whether that worked.
func (l *Loader) setPCIAutoprobe(on bool) bool {
	v := "0"
	if on {
		v = "1"
	}
	if err := os.WriteFile(l.sys("bus/pci/drivers_autoprobe"), []byte(v), 0); err != nil {
		l.Log.Warn("PCI autoprobe not changed", "on", on, "err", err)
		return false
	}
	return true
}

// bindPCI asks the PCI bus to find a driver for each device without one whose class (as
// sysfs gives it: "0x020000") passes want; each probe runs in this thread.
func (l *Loader) bindPCI(want func(class string) bool) {
	devs, _ := filepath.Glob(l.sys("bus/pci/devices/*"))
	for _, d := range devs {
		if _, err := os.Lstat(filepath.Join(d, "driver")); err == nil {
			continue
		}
		class, err := os.ReadFile(filepath.Join(d, "class"))
		if err != nil || !want(strings.TrimSpace(string(class))) {
			continue
		}
		// ENODEV: no driver for it, which is not an error here.
		_ = os.WriteFile(l.sys("bus/pci/drivers_probe"), []byte(filepath.Base(d)), 0)
	}
}

// bindHeldPCI binds the PCI devices ColdplugUrgent left unbound, at Nice.
func (l *Loader) bindHeldPCI() {
	l.mu.Lock()
	held := l.pciHeld
	l.pciHeld = false
	l.mu.Unlock()
	if !held {
		return
	}
	began := time.Now()
	l.atNice(l.Nice, func() { l.bindPCI(func(string) bool { return true }) })
	l.Log.Debug("PCI devices bound", "took", time.Since(began))
}

// atNice runs f on a thread of its own at nice n (0: the caller's thread) and waits for it.
func (l *Loader) atNice(n int, f func()) {
	if n == 0 {
		f()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = system.SetThreadPriority(n)
		f()
	}()
	<-done
}

func (l *Loader) scan(buses []string, all bool) []string {
	if l.modaliasFunc != nil {
		return l.modaliasFunc(buses, all)
	}
	return Modaliases(buses, all)
}

func (l *Loader) anyLoaded(names []string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range names {
		if l.loaded[m] {
			return true
		}
	}
	return false
}

// Modaliases lists the modalias of every device on the given buses, or on all of them. Reading
// sysfs is slow under emulation, and a boot reads it twice or more.
func Modaliases(buses []string, all bool) []string {
	var files []string
	if all {
		files, _ = filepath.Glob("/sys/bus/*/devices/*/modalias")
		buses = nil
	}
	for _, b := range buses {
		more, _ := filepath.Glob("/sys/bus/" + b + "/devices/*/modalias")
		files = append(files, more...)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if s := strings.TrimSpace(string(b)); s != "" {
			out = append(out, s)
		}
	}
	return out
}
