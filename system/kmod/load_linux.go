package kmod

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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
	// Nice: module loads run on threads at this nice value (0: the caller's priority).
	Nice int

	mu         sync.Mutex
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
	return l, nil
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

// Load loads the named modules and their dependencies, each module after its dependencies,
// and modules that do not depend on each other at the same time: finit_module runs the
// module's init, a driver's probe included, in the caller, and one slow probe (virtio_pci
// finding the disk and the network card) need not hold up the rest. It returns the modules it
// loaded now, in dependency order, and the first error (it goes on past a failed module).
func (l *Loader) Load(names ...string) ([]string, error) {
	order, err := l.Index.Order(names...)
	if err != nil {
		return nil, err
	}
	ended := make(map[string]chan struct{}, len(order))
	after := make(map[string][]string, len(order)) // a post soft dependency waits for its module
	for _, name := range order {
		ended[name] = make(chan struct{})
		for _, p := range l.Index.Modules[name].Post {
			after[Name(p)] = append(after[Name(p)], name)
		}
	}
	loadedNow := make([]bool, len(order))
	errs := make([]error, len(order))
	var wg sync.WaitGroup
	for i, name := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(ended[name])
			if l.Nice != 0 {
				_ = system.LowerThreadPriority(l.Nice)
			}
			for _, d := range append(l.Index.needs(name), after[name]...) {
				if ch, ok := ended[d]; ok {
					<-ch
				}
			}
			loadedNow[i], errs[i] = l.loadOne(name)
		}()
	}
	wg.Wait()
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
	err = unix.FinitModule(int(f.Fd()), l.Params[name], 0)
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
// appear (virtio0), so it repeats until a pass loads nothing new.
func (l *Loader) Coldplug() ([]string, error) {
	var all []string
	var first error
	for pass := 0; pass < 5; pass++ {
		want := map[string]bool{}
		// Buses whose drivers are all loaded already (listed in the config) need no scan.
		l.mu.Lock()
		buses, anyBus := l.Index.Buses(func(m string) bool { return l.loaded[m] })
		l.mu.Unlock()
		if len(buses) == 0 && !anyBus {
			break
		}
		scan := Modaliases
		if l.modaliasFunc != nil {
			scan = l.modaliasFunc
		}
		for _, alias := range scan(buses, anyBus) {
			for _, m := range l.Index.Match(alias) {
				want[m] = true
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
		if !l.anyLoaded(names) {
			break
		}
	}
	return all, first
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
