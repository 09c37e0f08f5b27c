package kmod

import (
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeLoader loads from testIndex through insert instead of finit_module.
func fakeLoader(insert func(name string) error) *Loader {
	return &Loader{Index: testIndex, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		loaded: map[string]bool{}, loading: map[string]chan struct{}{}, insertFunc: insert}
}

type loadLog struct {
	mu  sync.Mutex
	got []string
}

func (l *loadLog) add(s string) { l.mu.Lock(); l.got = append(l.got, s); l.mu.Unlock() }

// Each module is inserted after its dependencies (and after the module whose post soft
// dependency it is) have ended.
func TestLoadDependenciesFirst(t *testing.T) {
	var log loadLog
	l := fakeLoader(func(name string) error { log.add("begin " + name); log.add("end " + name); return nil })
	done, err := l.Load("virtio_net", "virtio_pci", "vfat")
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 8 {
		t.Errorf("loaded %v, want 8 modules", done)
	}
	for _, pair := range [][2]string{{"virtio_ring", "virtio_net"}, {"virtio", "virtio_net"}, {"failover", "net_failover"},
		{"net_failover", "virtio_net"}, {"virtio_ring", "virtio_pci"}, {"vfat", "nls_cp437"}} {
		if slices.Index(log.got, "end "+pair[0]) > slices.Index(log.got, "begin "+pair[1]) {
			t.Errorf("%s began before %s ended: %v", pair[1], pair[0], log.got)
		}
	}
}

// Modules that do not depend on each other load at the same time: each of these two waits for
// the other to begin, which only ends if both run at once.
func TestLoadIndependentModulesConcurrently(t *testing.T) {
	began := map[string]chan struct{}{"virtio": make(chan struct{}), "failover": make(chan struct{})}
	other := map[string]string{"virtio": "failover", "failover": "virtio"}
	l := fakeLoader(func(name string) error {
		if ch, ok := began[name]; ok {
			close(ch)
			select {
			case <-began[other[name]]:
			case <-time.After(10 * time.Second):
				return errors.New(name + ": loaded alone")
			}
		}
		return nil
	})
	l.Parallel = 2 // one per CPU otherwise
	if _, err := l.Load("virtio", "failover"); err != nil {
		t.Fatal(err)
	}
}

// Two callers asking for the same module (the listed modules and coldplug) insert it once;
// a failed module is reported and the others still load.
func TestLoadOnceAndPastFailures(t *testing.T) {
	var mu sync.Mutex
	count := map[string]int{}
	l := fakeLoader(func(name string) error {
		mu.Lock()
		count[name]++
		mu.Unlock()
		if name == "failover" {
			return errors.New("injected")
		}
		return nil
	})
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = l.Load("virtio_net", "virtio_pci") }()
	}
	wg.Wait()
	for name, n := range count {
		if n != 1 && name != "failover" {
			t.Errorf("%s inserted %d times", name, n)
		}
	}
	if count["virtio_pci"] != 1 || !l.loaded["virtio_pci"] || l.loaded["failover"] {
		t.Errorf("inserted %v, loaded %v: want virtio_pci loaded, failover not", count, l.loaded)
	}
	if !slices.ContainsFunc(errs, func(e error) bool { return e != nil }) {
		t.Errorf("no caller saw the failed module")
	}
}

// A bus driver being loaded by someone else when coldplug's first scan matches it (virtio_pci
// listed in the config) still makes coldplug scan again for the devices it brings (the virtio
// network card on the virtio bus). Coldplug used to stop there, as its own pass had loaded
// nothing new, and the network card's driver never loaded.
func TestColdplugRescansAfterAConcurrentLoad(t *testing.T) {
	pciBegan, pciGo := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	pciUp := false
	l := fakeLoader(func(name string) error {
		if name == "virtio_pci" {
			close(pciBegan)
			<-pciGo
			mu.Lock()
			pciUp = true // its probe finds the virtio devices
			mu.Unlock()
		}
		return nil
	})
	l.modaliasFunc = func(buses []string, all bool) []string {
		out := []string{"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"}
		mu.Lock()
		defer mu.Unlock()
		if pciUp {
			out = append(out, "virtio:d00000001v00001AF4")
		}
		return out
	}
	listed := make(chan error, 1)
	go func() { _, err := l.Load("virtio_pci"); listed <- err }()
	<-pciBegan
	coldplug := make(chan []string, 1)
	go func() { got, _ := l.Coldplug(); coldplug <- got }()
	time.Sleep(50 * time.Millisecond) // coldplug's first scan matches virtio_pci, then waits for it
	close(pciGo)
	if err := <-listed; err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-coldplug:
		if !slices.Contains(got, "virtio_net") {
			t.Errorf("coldplug loaded %v; want virtio_net, the driver of the device virtio_pci brought", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("coldplug did not end")
	}
}

// With one load at a time, the urgent modules (the network card's driver and its bus, with
// what they depend on) load before the others, whatever the order they were asked in; and
// coldplug's first scan reads only the urgent modules' buses, the rest after their loads.
func TestColdplugUrgentFirst(t *testing.T) {
	var log loadLog
	l := fakeLoader(func(name string) error { log.add(name); return nil })
	l.Parallel = 1
	l.Urgent = func(name, path string) bool { return name == "virtio_net" || name == "virtio_pci" }
	var scans [][]string
	l.modaliasFunc = func(buses []string, all bool) []string {
		scans = append(scans, buses)
		log.add("scan " + strings.Join(buses, ","))
		return []string{"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"}
	}
	got, err := l.Coldplug("uses_builtin", "virtio_net")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 7 {
		t.Errorf("coldplug loaded %v, want the 7 modules of uses_builtin, virtio_net and virtio_pci", got)
	}
	// crc32c_intel's cpu alias is pending all along: only the second scan reads its bus.
	if len(scans) < 2 || !slices.Equal(scans[0], []string{"pci", "virtio"}) || !slices.Contains(scans[1], "cpu") {
		t.Errorf("scans %v: want the first of the urgent modules' buses only (pci, virtio), then the rest", scans)
	}
	last := -1
	for _, m := range []string{"failover", "net_failover", "virtio", "virtio_ring", "virtio_net", "virtio_pci"} {
		last = max(last, slices.Index(log.got, m))
	}
	if i := slices.Index(log.got, "uses_builtin"); i < last {
		t.Errorf("load order %v: uses_builtin (not urgent) loaded before the urgent modules and their dependencies", log.got)
	}
	if i := slices.IndexFunc(log.got, func(s string) bool { return strings.HasPrefix(s, "scan ") && strings.Contains(s, "cpu") }); i < last {
		t.Errorf("load order %v: the full scan came before the urgent loads", log.got)
	}
}

// A soft dependency cycle (each module loads after the other) does not hang the loader.
func TestLoadSoftCycleEnds(t *testing.T) {
	ix := &Index{Release: "t", Modules: map[string]Module{
		"a": {Path: "a.ko", Post: []string{"b"}},
		"b": {Path: "b.ko", Post: []string{"a"}},
	}}
	l := fakeLoader(func(string) error { return nil })
	l.Index = ix
	done := make(chan []string, 1)
	go func() { got, _ := l.Load("a", "b"); done <- got }()
	select {
	case got := <-done:
		if len(got) != 2 {
			t.Errorf("loaded %v, want a and b", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Load hung on a soft dependency cycle")
	}
}
