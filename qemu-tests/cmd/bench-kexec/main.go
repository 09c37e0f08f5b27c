// Command bench-kexec measures reboot downtime under QEMU the way the first seed did: a
// host-side poller requests the web service every 10 ms and records the last good answer
// before and the first after. One run, one kernel (Debian's generic, out/kernel/amd64), rows:
//
//	seed-kexec      the seed's own method, rebuilt as a reference appliance (qemu-tests/seedref):
//	                busybox init and httpd, Debian's kexec-tools, kexec -l --reuse-cmdline while
//	                httpd answers, stop it, kexec -e
//	kexec-fast      baton: initctl kexec --method fast (kexec_load of the decompressed kernel)
//	kexec-file      baton: initctl kexec --method file (kexec_file_load of the bzImage)
//	reboot-seabios  baton: initctl reboot, SeaBIOS and QEMU's direct kernel boot
//	reboot-ovmf     baton: initctl reboot through OVMF (UEFI) and systemd-boot on the boot disk
//
// Each measurement boots its own VM and takes one reboot; the rows take turns, run after run,
// so a machine whose load changes meanwhile (other QEMU jobs) shifts every row alike. The
// downtime is broken down by console lines, timed as they reach the host: the request (command →
// the guest saw it), load (the next kernel, while the service still answers), shutdown, jump
// (kexec: purgatory and the kernel's decompression; reboot: firmware, loader, decompression),
// kernel → /init (the new kernel's own clock at /init), /init → ready (baton: the web service's
// READY=1; seed: httpd started), and ready → the poller's first answer.
//
// make image builds baton's image; the seed's appliance is built here from Debian's packages
// (apt-get download, nothing installed). It prints a table and writes out/bench/kexec.json.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/baton-init/baton/qemu-tests/vm"
)

// The breakdown's steps, in the order they happen.
const (
	stepRequest  = "request"
	stepLoad     = "load"
	stepShutdown = "shutdown"
	stepJump     = "jump"
	stepKernel   = "kernel→/init"
	stepInit     = "/init→ready"
	stepAnswer   = "ready→answer"
)

var steps = []string{stepRequest, stepLoad, stepShutdown, stepJump, stepKernel, stepInit, stepAnswer}

// benchPoll is the downtime poller of every row: StartPoller's (requests given up after
// GapTimeout, GapInFlight at once), with its requests paced while the guest is down so they
// start evenly rather than in bursts a second apart, which made both rows' downtimes fall in
// steps (the fast row's on ≈ 5.4 or ≈ 6.1 s, the seed's on 11.2, 12.2 or 13.2 s).
var benchPoll = vm.PollOptions{Timeout: vm.GapTimeout, MaxInFlight: vm.GapInFlight, PaceWhileDown: 100 * time.Millisecond}

// run is one reboot.
type run struct {
	Downtime    time.Duration            // last good answer before → first after
	FirstAnswer time.Duration            // command → first answer
	Steps       map[string]time.Duration // the breakdown
	Note        string                   // what the guest said it did (baton's kexec method)
	HostLoad    float64                  // the host's 1-minute load average at the command
}

// row is one method: how to measure a run of it, and what was measured.
type row struct {
	ID      string
	What    string
	measure func(t *vm.ProgramTB) run
	// Status is "" while it measures; "not available: …" or "failed: …" ends the row.
	Status string
	Runs   []run
	// Retried are the failures of runs that were taken again (a TCG guest on a starved host
	// sometimes panics at boot: "IO-APIC + timer doesn't work").
	Retried []string
}

// attempts is how often one run is tried before its row is given up as failed.
const attempts = 3

func main() {
	runs := flag.Int("runs", 3, "reboots per method")
	out := flag.String("o", "out/bench/kexec.json", "JSON output")
	initrd := flag.String("initrd", "out/initramfs.img", "baton's appliance image (make image)")
	initctl := flag.String("initctl", "out/bin/initctl", "host initctl")
	tlsDir := flag.String("tls-dir", "out/tls", "client certificates of the image")
	seedDir := flag.String("seed-dir", "out/seedref", "where the seed appliance's Debian packages are unpacked")
	verbose := flag.Bool("v", false, "console and harness output")
	only := flag.String("only", "", "comma-separated rows to run (seed-kexec, kexec-fast, kexec-file, reboot-seabios, reboot-ovmf)")
	flag.Parse()
	t := &vm.ProgramTB{Verbose: *verbose}
	t.Run("bench-kexec", func() {
		e := setup(t, *initrd, *initctl, *tlsDir, *seedDir)
		defer os.RemoveAll(e.tmpDir)
		rows := e.rows()
		if *only != "" {
			rows = pick(t, rows, *only)
		}
		bench(t, e, rows, *runs)
		report(t, e, rows, *runs, *out)
	})
}

func pick(t *vm.ProgramTB, rows []*row, only string) []*row {
	var out []*row
	for _, id := range strings.Split(only, ",") {
		found := false
		for _, r := range rows {
			if r.ID == strings.TrimSpace(id) {
				out, found = append(out, r), true
			}
		}
		if !found {
			t.Fatalf("-only %s: no such row", id)
		}
	}
	return out
}

// bench takes the rows' runs in turns. A row whose setup or run fails is marked and left out of
// the next turns; the others go on.
func bench(t *vm.ProgramTB, e *env, rows []*row, runs int) {
	for i := 0; i < runs; i++ {
		for _, r := range rows {
			if r.Status != "" {
				continue
			}
			var res run
			var err error
			for try := 1; try <= attempts; try++ {
				if res, err = attempt(t, r); err == nil {
					break
				}
				fmt.Fprintf(os.Stderr, "%-15s run %d, try %d: failed: %v\n", r.ID, i+1, try, err)
				r.Retried = append(r.Retried, fmt.Sprintf("run %d, try %d: %s", i+1, try, firstLine(err.Error())))
			}
			if err != nil {
				r.Status = "failed: " + err.Error()
				continue
			}
			r.Runs = append(r.Runs, res)
			note := ""
			if res.Note != "" {
				note = " (" + res.Note + ")"
			}
			fmt.Fprintf(os.Stderr, "%-15s run %d: downtime %.2fs%s\n", r.ID, i+1, res.Downtime.Seconds(), note)
		}
	}
}

// attempt measures one run; a harness failure (vm.Fatal) becomes an error, and the run's VM
// is stopped either way.
func attempt(t *vm.ProgramTB, r *row) (res run, err error) {
	defer func() {
		t.RunCleanups()
		if p := recover(); p != nil {
			f, ok := p.(vm.Fatal)
			if !ok {
				panic(p)
			}
			err = fmt.Errorf("%s", f.Msg)
		}
	}()
	return r.measure(t), nil
}

func report(t *vm.ProgramTB, e *env, rows []*row, runs int, out string) {
	fmt.Printf("\nkexec benchmark: Debian %s (%.1f MB), QEMU %s, %d runs each, rows taking turns\n",
		filepath.Base(e.vmlinuz), float64(size(e.vmlinuz))/1e6, accel(), runs)
	var lo, hi float64
	for _, r := range rows {
		for _, x := range r.Runs {
			if lo == 0 || x.HostLoad < lo {
				lo = x.HostLoad
			}
			hi = max(hi, x.HostLoad)
		}
	}
	fmt.Printf("host: %d CPUs, 1-minute load average at the commands %.1f–%.1f (other jobs stretch every step)\n", runtime.NumCPU(), lo, hi)
	fmt.Printf("images: baton %s %.1f MB; seed appliance %.1f MB\n\n", e.initrdFrom, float64(size(e.initrd))/1e6, float64(size(e.seedInitrd))/1e6)
	fmt.Print(table(rows))
	data, err := json.MarshalIndent(jsonReport(e, rows, runs), "", "  ")
	if err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.WriteFile(out, data, 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	fmt.Printf("\nJSON: %s\n", out)
}

func size(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

func accel() string {
	if a := os.Getenv("BATON_QEMU_ACCEL"); a != "" {
		return strings.ToUpper(a)
	}
	return "TCG"
}

// hostLoad is the host's 1-minute load average: on a shared machine other QEMU guests stretch
// every step, so the report says how busy the host was.
func hostLoad() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	fmt.Sscan(string(b), &l)
	return l
}
