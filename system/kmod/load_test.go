package kmod

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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

// ColdplugUrgent loads the urgent drivers of the devices present, and the devices their bus
// brings (virtio_net after virtio_pci), nothing else; a Coldplug meanwhile skips them.
func TestColdplugUrgentOnly(t *testing.T) {
	var log loadLog
	var mu sync.Mutex
	pciUp := false
	l := fakeLoader(func(name string) error {
		log.add(name)
		if name == "virtio_pci" {
			mu.Lock()
			pciUp = true
			mu.Unlock()
		}
		return nil
	})
	l.Urgent = func(name, path string) bool { return name == "virtio_net" || name == "virtio_pci" }
	var scans [][]string
	l.modaliasFunc = func(buses []string, all bool) []string {
		mu.Lock()
		defer mu.Unlock()
		scans = append(scans, buses)
		out := []string{"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", "cpu:type:x86,ven0000fam0006mod003A:feature:,0094,"}
		if pciUp {
			out = append(out, "virtio:d00000001v00001AF4")
		}
		return out
	}
	got, err := l.ColdplugUrgent()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"failover", "net_failover", "virtio", "virtio_net", "virtio_pci", "virtio_ring"}; !slices.Equal(got, want) {
		t.Errorf("ColdplugUrgent loaded %v, want %v (not crc32c_intel, whose device is there but which is not urgent)", got, want)
	}
	for _, s := range scans {
		if slices.Contains(s, "cpu") {
			t.Errorf("scans %v: want only the urgent modules' buses", scans)
		}
	}
	rest, err := l.Coldplug()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rest, []string{"crc32c_intel"}) {
		t.Errorf("Coldplug after it loaded %v, want crc32c_intel alone", rest)
	}
}

// With NetworkPCIFirst, the PCI driver ColdplugUrgent loads binds the network controller only,
// with autoprobe off while it loads; Coldplug binds the rest.
func TestColdplugUrgentBindsNetworkPCIFirst(t *testing.T) {
	sys := t.TempDir()
	write := func(p, v string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(sys, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sys, p), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(p string) string {
		b, _ := os.ReadFile(filepath.Join(sys, p))
		return string(b)
	}
	write("bus/pci/drivers_autoprobe", "1")
	write("bus/pci/drivers_probe", "")
	write("bus/pci/devices/0000:00:02.0/class", "0x020000\n") // virtio-net
	write("bus/pci/devices/0000:00:03.0/class", "0x00ff00\n") // virtio-rng
	var autoprobeAtLoad string
	l := fakeLoader(func(name string) error {
		if name == "virtio_pci" {
			autoprobeAtLoad = read("bus/pci/drivers_autoprobe")
		}
		return nil
	})
	l.SysDir = sys
	l.NetworkPCIFirst = true
	l.Urgent = func(name, path string) bool { return name == "virtio_net" || name == "virtio_pci" }
	l.modaliasFunc = func(buses []string, all bool) []string {
		return []string{"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"}
	}
	if _, err := l.ColdplugUrgent(); err != nil {
		t.Fatal(err)
	}
	if autoprobeAtLoad != "0" {
		t.Errorf("autoprobe was %q while virtio_pci loaded, want 0", autoprobeAtLoad)
	}
	if got := read("bus/pci/drivers_autoprobe"); got != "1" {
		t.Errorf("autoprobe %q after ColdplugUrgent, want it back on (1)", got)
	}
	if got := read("bus/pci/drivers_probe"); got != "0000:00:02.0" {
		t.Errorf("ColdplugUrgent bound %q, want the network controller 0000:00:02.0", got)
	}
	write("bus/pci/drivers_probe", "")
	if _, err := l.Coldplug(); err != nil {
		t.Fatal(err)
	}
	// Both are still unbound in this fake sysfs; the last one asked for is the other device.
	if got := read("bus/pci/drivers_probe"); got != "0000:00:03.0" {
		t.Errorf("Coldplug bound %q last, want the device left unbound, 0000:00:03.0", got)
	}
}
