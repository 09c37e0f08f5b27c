package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/baton-init/baton/images"
	"github.com/baton-init/baton/qemu-tests/vm"
)

// env is what the rows share: the kernel, both appliances and their boot disks.
type env struct {
	vmlinuz, modules   string
	initrd, disk       string // baton's image and its boot disk (kernel and image in slot a)
	initrdFrom         string // where the image was copied from
	initctl, tlsDir    string
	seedInitrd         string
	seedDisk           string
	seedErr            error  // building the seed's appliance failed
	fastMissing        string // why initctl kexec --method fast cannot run, if it cannot
	ovmfMissing        string
	bootloader, tmpDir string
}

// The demo's command line (quiet) everywhere: the boot disk's loader entry, the direct boots
// and, through kexec's reuse of it, every kexec.
const cmdline = "console=ttyS0 panic=-1 quiet"

const (
	ovmfCode   = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	bootloader = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
)

func setup(t *vm.ProgramTB, initrd, initctl, tlsDir, seedDir string) *env {
	vmlinuz, modules := vm.Kernel(t, "amd64")
	e := &env{vmlinuz: vmlinuz, modules: modules, initrdFrom: initrd}
	dir, err := os.MkdirTemp("", "bench-kexec")
	if err != nil {
		t.Fatalf("%v", err)
	}
	e.tmpDir = dir
	// The run's own copies: the checkout's out/ may be rebuilt while the benchmark runs, and a
	// boot disk made from one image then no longer matches the image a VM boots (baton would
	// not know its slot).
	e.initrd, e.initctl, e.tlsDir = filepath.Join(dir, "initramfs.img"), filepath.Join(dir, "initctl"), filepath.Join(dir, "tls")
	for _, c := range [][2]string{{initrd, e.initrd}, {initctl, e.initctl}, {tlsDir, e.tlsDir}} {
		if err := vm.CopyPath(c[0], c[1]); err != nil {
			t.Fatalf("%v (make image builds it)", err)
		}
	}
	e.disk = filepath.Join(dir, "disk.img")
	if err := images.BuildDisk(e.disk, images.DiskSpec{Bootloader: bootloader, Kernel: vmlinuz, Initrd: e.initrd, Cmdline: cmdline}); err != nil {
		t.Fatalf("baton's boot disk: %v (make qemu installs systemd-boot-efi)", err)
	}
	if _, err := os.Stat(ovmfCode); err != nil {
		e.ovmfMissing = fmt.Sprintf("not available: no UEFI firmware (%v); make qemu installs it (Debian package ovmf)", err)
	}
	e.fastMissing = fastMethodMissing(e.initctl)
	e.seedInitrd, e.seedDisk, e.seedErr = buildSeed(seedDir, dir, vmlinuz, modules)
	return e
}

// fastMethodMissing says why the fast method cannot be measured: an initctl whose kexec has
// no --method flag has one method only, the file one.
func fastMethodMissing(initctl string) string {
	out, _ := exec.Command(initctl, "kexec", "--help").CombinedOutput()
	if strings.Contains(string(out), "--method") {
		return ""
	}
	return fmt.Sprintf("not available: %s kexec has no --method flag (%s)", initctl, strings.TrimSpace(firstLine(string(out))))
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func (e *env) rows() []*row {
	direct := func(o vm.BootOptions) vm.BootOptions { o.Kernel = e.vmlinuz; return o }
	fileArgs := []string{"kexec", "--method", "file"}
	fileWhat := "baton: initctl kexec --method file (kexec_file_load of the bzImage)"
	if e.fastMissing != "" {
		fileArgs = []string{"kexec"} // before --method there was only this method
		fileWhat = "baton: initctl kexec (kexec_file_load of the bzImage; no --method yet)"
	}
	rows := []*row{
		{ID: "seed-kexec", What: "seed: busybox init+httpd, kexec-tools kexec -l --reuse-cmdline, stop httpd, kexec -e",
			measure: func(t *vm.ProgramTB) run { return e.measureSeed(t) }},
		{ID: "kexec-fast", What: "baton: initctl kexec --method fast (kexec_load of the decompressed kernel)", Status: e.fastMissing,
			measure: func(t *vm.ProgramTB) run {
				return e.measureBaton(t, direct, []string{"kexec", "--method", "fast"})
			}},
		{ID: "kexec-file", What: fileWhat,
			measure: func(t *vm.ProgramTB) run { return e.measureBaton(t, direct, fileArgs) }},
		{ID: "reboot-seabios", What: "baton: initctl reboot, SeaBIOS + QEMU direct kernel boot",
			measure: func(t *vm.ProgramTB) run {
				return e.measureBaton(t, func(o vm.BootOptions) vm.BootOptions { o = direct(o); o.Reboot = true; return o }, []string{"reboot"})
			}},
		{ID: "reboot-ovmf", What: "baton: initctl reboot, OVMF (UEFI) + systemd-boot from the boot disk", Status: e.ovmfMissing,
			measure: func(t *vm.ProgramTB) run {
				return e.measureBaton(t, func(o vm.BootOptions) vm.BootOptions { o.Reboot = true; return o }, []string{"reboot"})
			}},
	}
	if e.seedErr != nil {
		rows[0].Status = "failed: building the seed's appliance: " + e.seedErr.Error()
	}
	return rows
}

var (
	// Every line baton writes to the console starts with the kernel's clock, as dmesg's do.
	batonUptime  = regexp.MustCompile(`^\[\s*([0-9.]+)\] baton:`)
	kernelToInit = regexp.MustCompile(`kernel_to_init=(\S+)`)
	// how="method fast (xz payload extracted in 1.2s; KASLR: …)", or "method file (fast refused: …)".
	kexecHow = regexp.MustCompile(`how=("[^"]*"|\S+)`)
)

// measureBaton boots baton's demo appliance, waits until it serves, and takes one reboot with
// initctl args, timed from outside by the poller and broken down by baton's console lines
// (printed whatever the kernel's log level, so "quiet" does not hide them).
func (e *env) measureBaton(t *vm.ProgramTB, boot func(vm.BootOptions) vm.BootOptions, args []string) run {
	g := vm.Boot(t, boot(vm.BootOptions{Initrd: e.initrd, Disk: e.disk, Append: "quiet",
		Forward: []int{vm.WebPort, vm.ControlPort}, Initctl: e.initctl, TLSDir: e.tlsDir, Quiet: !t.Verbose}))
	g.WaitFor(`baton: all services started`, 180*time.Second)
	p := g.Poll(vm.WebPort, benchPoll)
	defer p.End()
	p.WaitAnswers(t, 20, 60*time.Second) // steady state: good answers before the command
	r := run{Steps: map[string]time.Duration{}}
	r.HostLoad = hostLoad()
	cmd := time.Now()
	if out, code := g.Initctl(t, args...); code != 0 {
		t.Fatalf("initctl %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
	_, asked := g.WaitForAt(`baton: (power|kexec) request`, 60*time.Second)
	r.Steps[stepRequest] = asked.Sub(cmd)
	start := asked
	if args[0] == "kexec" {
		line, loaded := g.WaitForAt(`baton: kexec kernel loaded`, 60*time.Second)
		r.Steps[stepLoad] = loaded.Sub(asked)
		if m := kexecHow.FindStringSubmatch(line); m != nil {
			r.Note = strings.Trim(m[1], `"`)
		}
		start = loaded
	}
	_, down := g.WaitForAt(`baton: shutdown complete`, 60*time.Second)
	line, initAt := g.WaitForAt(`baton: baton starting as PID 1`, 120*time.Second)
	var k2i time.Duration
	if m := kernelToInit.FindStringSubmatch(line); m != nil {
		k2i, _ = time.ParseDuration(m[1])
	}
	readyLine, ready := g.WaitForAt(`baton: ready service=web`, 120*time.Second)
	gap := p.WaitGap(t, initAt, 120*time.Second)
	r.Steps[stepShutdown] = down.Sub(start)
	r.Steps[stepJump] = initAt.Sub(down) - k2i
	r.Steps[stepKernel] = k2i
	r.Steps[stepInit] = guestSpan(line, readyLine, initAt, ready)
	r.Steps[stepAnswer] = gap.To.Sub(ready)
	r.Downtime = gap.Length()
	r.FirstAnswer = gap.To.Sub(cmd)
	return r
}

// guestSpan is the time between two console lines of one boot by the guest's own clock, which
// the serial console's delays (and a host too busy to read it at once) do not change; by the
// host's arrival times when a line lacks it.
func guestSpan(from, to string, fromAt, toAt time.Time) time.Duration {
	a, okA := uptime(from)
	b, okB := uptime(to)
	if okA && okB {
		return b - a
	}
	return toAt.Sub(fromAt)
}

// uptime reads the kernel's clock from a console line: baton's "[  2.345678] baton: …" prefix,
// or the seed appliance's "uptime=2.34".
func uptime(line string) (time.Duration, bool) {
	m := batonUptime.FindStringSubmatch(line)
	if m == nil {
		m = seedUptime.FindStringSubmatch(line)
	}
	if m == nil {
		return 0, false
	}
	s, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, false
	}
	return time.Duration(s * float64(time.Second)), true
}
