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
)

// Loader loads modules from an index with finit_module(2).
type Loader struct {
	Index *Index
	Dir   string // /lib/modules/<release>
	Log   *slog.Logger
	// Params are module parameters by module name ("stop_on_reboot=0"), what modprobe.d's
	// options lines give modprobe. Set before the first Load.
	Params map[string]string

	mu     sync.Mutex
	loaded map[string]bool
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
	l := &Loader{Index: ix, Dir: Dir(root, release), Log: log, loaded: map[string]bool{}}
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

// Load loads the named modules and their dependencies, dependencies first. It returns the
// modules it loaded now, and the first error (it goes on past a failed module).
func (l *Loader) Load(names ...string) ([]string, error) {
	order, err := l.Index.Order(names...)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var done []string
	var first error
	for _, name := range order {
		if l.loaded[name] {
			continue
		}
		start := time.Now()
		if err := l.insert(name); err != nil {
			if first == nil {
				first = err
			}
			l.Log.Error("module load failed", "module", name, "err", err)
			continue
		}
		l.loaded[name] = true
		done = append(done, name)
		l.Log.Debug("module loaded", "module", name, "took", time.Since(start))
	}
	return done, first
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
		for _, alias := range Modaliases(buses, anyBus) {
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
		if len(done) == 0 {
			break
		}
	}
	return all, first
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
