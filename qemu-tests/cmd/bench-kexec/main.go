// Command bench-kexec measures reboot downtime of the demo appliance under QEMU the way the
// seed did: a host-side poller requests the web service every few milliseconds and records the
// last good answer before and the first after, for
//
//	(a) initctl reboot through OVMF (UEFI firmware) and systemd-boot on the boot disk,
//	(b) initctl reboot with SeaBIOS and QEMU's direct kernel boot,
//	(c) initctl kexec (the kernel and initramfs from /boot),
//
// and breaks the kexec downtime down by the serial console's lines, timed as they reach the
// host. make image builds what it boots; it writes a table and out/bench/kexec.json.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/baton-init/baton/images"
	"github.com/baton-init/baton/qemu-tests/vm"
)

var kernelToInit = regexp.MustCompile(`kernel_to_init=(\S+)`)

// run is one reboot: downtime and the moments its console lines reached the host.
type run struct {
	Downtime   time.Duration            `json:"downtime"`
	Breakdown  map[string]time.Duration `json:"breakdown"`
	FirstReply time.Duration            `json:"command_to_first_answer"`
}

type method struct {
	Name string `json:"name"`
	Runs []run  `json:"runs"`
}

func main() {
	runs := flag.Int("runs", 3, "reboots per method")
	out := flag.String("o", "out/bench/kexec.json", "JSON output")
	initrd := flag.String("initrd", "out/initramfs.img", "the appliance image (make image)")
	initctl := flag.String("initctl", "out/bin/initctl", "host initctl")
	tlsDir := flag.String("tls-dir", "out/tls", "client certificates of the image")
	verbose := flag.Bool("v", false, "console and harness output")
	only := flag.String("only", "", "run only this method (kexec, reboot-seabios, reboot-ovmf)")
	flag.Parse()
	t := &vm.ProgramTB{Verbose: *verbose}
	t.Run("bench-kexec", func() { bench(t, *runs, *out, *initrd, *initctl, *tlsDir, *only) })
}

func bench(t *vm.ProgramTB, runs int, out, initrd, initctl, tlsDir, only string) {
	vmlinuz, _ := vm.Kernel(t, "amd64")
	// The demo's command line (quiet) everywhere: the boot disk's loader entry and the direct
	// boots alike.
	cmdline := "console=ttyS0 panic=-1 quiet"
	diskDir, err := os.MkdirTemp("", "bench-kexec-disk")
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer os.RemoveAll(diskDir)
	disk := filepath.Join(diskDir, "disk.img")
	if err := images.BuildDisk(disk, images.DiskSpec{Bootloader: "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
		Kernel: vmlinuz, Initrd: initrd, Cmdline: cmdline}); err != nil {
		t.Fatalf("boot disk: %v", err)
	}
	st, _ := os.Stat(initrd)
	kst, _ := os.Stat(vmlinuz)
	base := vm.BootOptions{Initrd: initrd, Disk: disk, Append: "quiet", Forward: []int{vm.WebPort, vm.ControlPort},
		Initctl: initctl, TLSDir: tlsDir, Quiet: !t.Verbose}
	var results []method
	for _, m := range []struct {
		name   string
		opts   func(vm.BootOptions) vm.BootOptions
		action string
	}{
		{"kexec", func(o vm.BootOptions) vm.BootOptions { o.Kernel = vmlinuz; return o }, "kexec"},
		{"reboot-seabios", func(o vm.BootOptions) vm.BootOptions { o.Kernel, o.Reboot = vmlinuz, true; return o }, "reboot"},
		{"reboot-ovmf", func(o vm.BootOptions) vm.BootOptions { o.Reboot = true; return o }, "reboot"},
	} {
		if only != "" && only != m.name {
			continue
		}
		fmt.Fprintf(os.Stderr, "%s: %d runs\n", m.name, runs)
		results = append(results, measure(t, m.name, m.opts(base), m.action, runs))
		t.RunCleanups()
	}
	fmt.Printf("kexec benchmark: demo appliance, Debian %s, initramfs %.1f MB, kernel %.1f MB, QEMU TCG, %d runs each\n\n",
		filepath.Base(vmlinuz), float64(st.Size())/1e6, float64(kst.Size())/1e6, runs)
	fmt.Print(table(results))
	data, _ := json.MarshalIndent(map[string]any{"kernel": filepath.Base(vmlinuz), "initramfs_bytes": st.Size(), "methods": results}, "", "  ")
	os.MkdirAll(filepath.Dir(out), 0o755)
	if err := os.WriteFile(out, data, 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	fmt.Printf("\nJSON: %s\n", out)
}

// measure boots once and reboots runs times with action, timing each from outside.
func measure(t *vm.ProgramTB, name string, opts vm.BootOptions, action string, runs int) method {
	g := vm.Boot(t, opts)
	g.WaitFor(`baton: all services started`, 180*time.Second)
	p := vm.StartPoller(g, vm.WebPort)
	defer p.End()
	res := method{Name: name}
	for i := 0; i < runs; i++ {
		time.Sleep(500 * time.Millisecond) // steady state: the poller has good answers before
		cmd := time.Now()
		if out, code := g.Initctl(t, action); code != 0 {
			t.Fatalf("%s: initctl %s: %d %s", name, action, code, out)
		}
		// The breakdown is read from baton's own console lines (printed whatever the kernel's
		// log level) and the new kernel's clock at /init, so it holds with "quiet" too.
		r := run{Breakdown: map[string]time.Duration{}}
		_, asked := g.WaitForAt(`baton: (power|kexec) request`, 60*time.Second)
		r.Breakdown["API call (TLS under TCG)"] = asked.Sub(cmd)
		start := asked
		if action == "kexec" {
			_, loaded := g.WaitForAt(`baton: kexec kernel loaded`, 60*time.Second)
			r.Breakdown["load (services up)"] = loaded.Sub(asked)
			start = loaded
		}
		_, down := g.WaitForAt(`baton: shutdown complete`, 60*time.Second)
		line, initAt := g.WaitForAt(`baton: baton starting as PID 1`, 120*time.Second)
		var k2i time.Duration
		if m := kernelToInit.FindStringSubmatch(line); m != nil {
			k2i, _ = time.ParseDuration(m[1])
		}
		_, webReady := g.WaitForAt(`baton: ready service=web`, 120*time.Second)
		g.WaitFor(`baton: all services started`, 120*time.Second)
		gap := p.WaitGap(t, initAt, 120*time.Second)
		jumpName := "jump: purgatory, decompression"
		if action != "kexec" {
			jumpName = "firmware, loader, decompression"
		}
		r.Breakdown["shutdown"] = down.Sub(start)
		r.Breakdown[jumpName] = initAt.Sub(down) - k2i
		r.Breakdown["kernel to /init"] = k2i
		r.Breakdown["/init to web ready"] = webReady.Sub(initAt)
		r.Breakdown["web ready to first answer"] = gap.To.Sub(webReady)
		r.Downtime = gap.Length()
		r.FirstReply = gap.To.Sub(cmd)
		fmt.Fprintf(os.Stderr, "  %s run %d: downtime %v\n", name, i+1, r.Downtime.Round(time.Millisecond))
		res.Runs = append(res.Runs, r)
	}
	g.Initctl(t, "poweroff")
	g.WaitExit(60 * time.Second)
	return res
}

func stats(ds []time.Duration) (min, med, max time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[0], s[len(s)/2], s[len(s)-1]
}

func table(ms []method) string {
	var b strings.Builder
	sec := func(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }
	fmt.Fprintf(&b, "%-18s %10s %10s %10s   %s\n", "HTTP downtime", "min", "median", "max", "command → first answer (median)")
	medians := map[string]time.Duration{}
	for _, m := range ms {
		var d, f []time.Duration
		for _, r := range m.Runs {
			d, f = append(d, r.Downtime), append(f, r.FirstReply)
		}
		lo, med, hi := stats(d)
		_, fmed, _ := stats(f)
		medians[m.Name] = med
		fmt.Fprintf(&b, "%-18s %10s %10s %10s   %s\n", m.Name, sec(lo), sec(med), sec(hi), sec(fmed))
	}
	if k, ok := medians["kexec"]; ok {
		for _, other := range []string{"reboot-ovmf", "reboot-seabios"} {
			if o, ok := medians[other]; ok {
				fmt.Fprintf(&b, "ratio %s / kexec (medians): %.2f\n", other, o.Seconds()/k.Seconds())
			}
		}
	}
	for _, m := range ms {
		fmt.Fprintf(&b, "\n%s breakdown (median of %d):\n", m.Name, len(m.Runs))
		keys := []string{"API call (TLS under TCG)", "load (services up)", "shutdown", "jump: purgatory, decompression", "firmware, loader, decompression", "kernel to /init", "/init to web ready", "web ready to first answer"}
		for _, k := range keys {
			var ds []time.Duration
			for _, r := range m.Runs {
				if v, ok := r.Breakdown[k]; ok {
					ds = append(ds, v)
				}
			}
			if len(ds) == 0 {
				continue
			}
			_, med, _ := stats(ds)
			fmt.Fprintf(&b, "  %-32s %s\n", k, sec(med))
		}
	}
	return b.String()
}
