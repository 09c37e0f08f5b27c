// Package vm boots baton images under QEMU for the tests and benchmarks: serial console
// captured line by line with host arrival times, port forwards on loopback, QEMU's monitor,
// initctl against the guest's remote API, and an HTTP poller that measures downtime.
package vm

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TB is what the harness needs of a test (testing.TB has it; the benchmarks bring their own).
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// RepoRoot is the repository's top directory (out/ lives there).
var RepoRoot = func() string {
	d, _ := os.Getwd()
	for dir := d; dir != "/"; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
	}
	return d
}()

// requireQEMU makes a missing QEMU or kernel a failure rather than a skip (make test sets it),
// so CI cannot pass by skipping the tests that matter most.
func RequireQEMU() bool { return os.Getenv("BATON_REQUIRE_QEMU") == "1" }

func SkipOrFail(t TB, format string, args ...any) {
	t.Helper()
	if RequireQEMU() {
		t.Fatalf(format, args...)
	}
	t.Skipf(format+" (set BATON_REQUIRE_QEMU=1 or run make test to fetch it)", args...)
}

// kernel finds the kernel image under out/kernel/<flavour>, fetching it if make test asked.
func Kernel(t TB, flavour string) (vmlinuz, modules string) {
	t.Helper()
	dir := filepath.Join(RepoRoot, "out/kernel", flavour)
	found, _ := filepath.Glob(filepath.Join(dir, "boot/vmlinuz-*"))
	if len(found) == 0 && RequireQEMU() {
		cmd := exec.Command(filepath.Join(RepoRoot, "qemu-tests/fetch-kernel.sh"), flavour)
		cmd.Stderr = os.Stderr
		if out, err := cmd.Output(); err != nil {
			t.Fatalf("fetch kernel %s: %v (%s)", flavour, err, out)
		}
		found, _ = filepath.Glob(filepath.Join(dir, "boot/vmlinuz-*"))
	}
	if len(found) == 0 {
		SkipOrFail(t, "no kernel under %s", dir)
	}
	return found[0], filepath.Join(dir, "lib/modules")
}

func qemuBinary(t TB) string {
	t.Helper()
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		SkipOrFail(t, "qemu-system-x86_64 not installed")
	}
	return p
}

// VM is one running QEMU guest.
type VM struct {
	// t is the test the VM's own failures (WaitFor, WaitExit, Monitor) and console lines go
	// to: the one that booted it, or the subtest VM.Run runs. tmu guards it, and is held while
	// a console line is logged, so no line is logged to a subtest that has ended.
	tmu     sync.Mutex
	t       TB
	opts    BootOptions
	cmd     *exec.Cmd
	ports   map[int]int // guest port → host port
	monitor string      // HMP unix socket path

	mu     sync.Mutex
	lines  []string
	times  []time.Time   // when each line reached the host
	cursor int           // WaitFor looks from here: each wait starts after the previous match
	notify chan struct{} // closed and replaced on every new line
	exited chan struct{}
	err    error // QEMU's exit
}

// BootOptions says how to boot.
type BootOptions struct {
	Kernel  string // direct kernel boot (SeaBIOS); "" boots the disk through OVMF
	Initrd  string
	Append  string // added to the kernel command line
	Forward []int  // guest TCP ports to forward from free host loopback ports
	Disk    string // attached as virtio, copy-on-write (the file is never changed)
	// Reboot lets the guest reboot (no -no-reboot): a firmware reboot comes back up.
	Reboot bool
	// Initctl and TLSDir are the host's initctl and client certificates, for VM.Initctl.
	Initctl string
	TLSDir  string
	// Quiet keeps the console out of the test log (benchmarks).
	Quiet bool
	// RNG attaches a virtio-rng device.
	RNG bool
	// Devices are more QEMU -device arguments, e.g. "i6300esb" (a watchdog).
	Devices []string
}

// Boot starts QEMU. It is stopped (killed if still running) when the test ends.
func Boot(t TB, o BootOptions) *VM {
	t.Helper()
	accel := os.Getenv("BATON_QEMU_ACCEL")
	if accel == "" {
		accel = "tcg" // /dev/kvm exists here but hangs guests; KVM only when asked
	}
	vm := &VM{t: t, opts: o, ports: map[int]int{}, notify: make(chan struct{}), exited: make(chan struct{}),
		monitor: filepath.Join(t.TempDir(), "monitor.sock")}
	// Host port 0: QEMU binds each forward to a port the kernel picks, and Boot reads them back
	// from the monitor. Picking a free port here and handing it to QEMU would leave a window in
	// which a parallel test's QEMU (or any outgoing connection) takes it, and QEMU then exits
	// with "Could not set up host forwarding rule".
	netdev := "user,id=n0"
	for _, gp := range o.Forward {
		netdev += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:0-:%d", gp)
	}
	args := []string{
		"-accel", accel, "-m", "512", "-nodefaults", "-display", "none",
		"-serial", "stdio", "-monitor", "unix:" + vm.monitor + ",server,nowait",
		"-netdev", netdev, "-device", "virtio-net-pci,netdev=n0",
	}
	if o.RNG || slices.Contains(o.Forward, ControlPort) {
		// Entropy: the emulated CPU has no RDRAND, and without a source the kernel's random
		// pool may take ~15 s to fill; crypto/rand (DHCP, and the remote API's TLS, which
		// answers "entropy not ready" until then) waits for it. The images carry virtio_rng,
		// which coldplug loads for the device.
		args = append(args, "-device", "virtio-rng-pci")
	}
	for _, d := range o.Devices {
		args = append(args, "-device", d)
	}
	if dir := os.Getenv("BATON_QEMU_PCAP"); dir != "" {
		// Diagnosis: every packet between the guest and QEMU's user network, with the host's
		// clock, to set beside the console's lines (tcpdump -tt -r).
		f, err := os.CreateTemp(dir, "guest-*.pcap")
		if err != nil {
			t.Fatalf("BATON_QEMU_PCAP: %v", err)
		}
		f.Close()
		args = append(args, "-object", "filter-dump,id=pcap0,netdev=n0,file="+f.Name())
	}
	if !o.Reboot {
		args = append(args, "-no-reboot")
	}
	if o.Kernel != "" {
		// BATON_QEMU_APPEND: more of the command line for a diagnosis (baton.debug).
		args = append(args, "-kernel", o.Kernel, "-initrd", o.Initrd,
			"-append", strings.TrimSpace("console=ttyS0 panic=-1 "+o.Append+" "+os.Getenv("BATON_QEMU_APPEND")))
	} else {
		args = append(args, ovmfArgs(t)...)
	}
	if o.Disk != "" {
		// snapshot=on: writes go to a temporary overlay, so parallel guests share one image.
		args = append(args, "-drive", "file="+o.Disk+",if=virtio,format=raw,snapshot=on")
	}
	vm.cmd = exec.Command(qemuBinary(t), args...)
	stdout, err := vm.cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("%v", err)
	}
	vm.cmd.Stderr = vm.cmd.Stdout
	if !o.Quiet {
		t.Logf("qemu %s", strings.Join(args, " "))
	}
	if err := vm.cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	go vm.readConsole(stdout)
	t.Cleanup(func() {
		select {
		case <-vm.exited:
		default:
			_ = vm.cmd.Process.Kill()
			<-vm.exited
		}
	})
	if len(o.Forward) > 0 {
		vm.readPorts(t)
	}
	return vm
}

// ovmfArgs boots through UEFI firmware: Debian's OVMF, read-only code and a private copy of
// the variables. q35, as real UEFI machines are PCIe.
func ovmfArgs(t TB) []string {
	t.Helper()
	code, vars := "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
	data, err := os.ReadFile(vars)
	if err != nil {
		SkipOrFail(t, "no OVMF (Debian package ovmf): %v", err)
	}
	mine := filepath.Join(t.TempDir(), "vars.fd")
	if err := os.WriteFile(mine, data, 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	return []string{"-machine", "q35", "-drive", "if=pflash,format=raw,readonly=on,file=" + code,
		"-drive", "if=pflash,format=raw,file=" + mine}
}

func (vm *VM) readConsole(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if !vm.opts.Quiet {
			vm.tmu.Lock()
			vm.t.Logf("console %s: %s", time.Now().Format("15:04:05.000"), line)
			vm.tmu.Unlock()
		}
		vm.mu.Lock()
		vm.lines = append(vm.lines, line)
		vm.times = append(vm.times, time.Now())
		close(vm.notify)
		vm.notify = make(chan struct{})
		vm.mu.Unlock()
	}
	err := vm.cmd.Wait()
	vm.mu.Lock()
	vm.err = err
	close(vm.exited)
	vm.mu.Unlock()
}

// PanicLine matches the console lines of a kernel that died.
var PanicLine = regexp.MustCompile(`Kernel panic|Attempted to kill init`)

// WaitFor waits until a console line after the previous match matches re, and returns it. A
// kernel panic, QEMU's exit or the timeout fails the test with the last console lines.
func (vm *VM) WaitFor(re string, timeout time.Duration) string {
	vm.test().Helper()
	line, _ := vm.WaitForAt(re, timeout)
	return line
}

// WaitForAt is WaitFor that also returns when the line reached the host.
func (vm *VM) WaitForAt(re string, timeout time.Duration) (string, time.Time) {
	vm.test().Helper()
	pat := regexp.MustCompile(re)
	deadline := time.After(timeout)
	vm.mu.Lock()
	seen := vm.cursor
	vm.mu.Unlock()
	for {
		vm.mu.Lock()
		lines, times, notify := vm.lines, vm.times, vm.notify
		vm.mu.Unlock()
		for ; seen < len(lines); seen++ {
			if pat.MatchString(lines[seen]) {
				vm.mu.Lock()
				vm.cursor = seen + 1
				vm.mu.Unlock()
				return lines[seen], times[seen]
			}
			if PanicLine.MatchString(lines[seen]) {
				vm.fail("kernel panic while waiting for /%s/", re)
			}
		}
		select {
		case <-notify:
		case <-vm.exited:
			vm.mu.Lock()
			more := len(vm.lines) > seen
			vm.mu.Unlock()
			if !more {
				vm.fail("QEMU exited (%v) while waiting for /%s/", vm.err, re)
			}
		case <-deadline:
			vm.fail("timed out after %s waiting for /%s/", timeout, re)
		}
	}
}

// Console returns every console line so far.
func (vm *VM) Console() []string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return append([]string(nil), vm.lines...)
}

func (vm *VM) fail(format string, args ...any) {
	t := vm.test()
	t.Helper()
	vm.failT(t, format, args...)
}

func (vm *VM) test() TB {
	vm.tmu.Lock()
	defer vm.tmu.Unlock()
	return vm.t
}

// Run runs f as a subtest of t. While it runs, the VM's own failures (WaitFor, WaitExit,
// Monitor) and its console lines go to the subtest: a line that never comes fails the subtest
// that waited for it. (Failing the booting test from a subtest's goroutine would end that
// goroutine with only "subtest may have called FailNow on a parent test" to show for it.)
// Subtests that share a VM run one after another.
func (vm *VM) Run(t *testing.T, name string, f func(t *testing.T)) bool {
	return t.Run(name, func(sub *testing.T) {
		vm.tmu.Lock()
		parent := vm.t
		vm.t = sub
		vm.tmu.Unlock()
		defer func() {
			vm.tmu.Lock()
			vm.t = parent
			vm.tmu.Unlock()
		}()
		f(sub)
	})
}

func (vm *VM) failT(t TB, format string, args ...any) {
	t.Helper()
	lines := vm.Console()
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	t.Fatalf(format+"\nlast console lines:\n  %s", append(args, strings.Join(lines, "\n  "))...)
}

// WaitExit waits for QEMU to exit and returns its exit code.
func (vm *VM) WaitExit(timeout time.Duration) int {
	vm.test().Helper()
	select {
	case <-vm.exited:
	case <-time.After(timeout):
		vm.fail("QEMU still running after %s", timeout)
	}
	return vm.cmd.ProcessState.ExitCode()
}

// Guest ports of the test and demo appliances.
const (
	WebPort     = 80
	TestPort    = 81
	ControlPort = 7000
	StreamPort  = 9000
)

// Initctl runs the host's initctl against the guest's remote API (mutual TLS through the port
// forward) and returns its output and exit code.
func (vm *VM) Initctl(t TB, args ...string) (string, int) {
	t.Helper()
	full := append([]string{"--remote", "127.0.0.1:" + strconv.Itoa(vm.ports[ControlPort]), "--tls-dir", vm.opts.TLSDir}, args...)
	cmd := exec.Command(vm.opts.Initctl, full...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("initctl %v: %v", args, err)
	}
	t.Logf("initctl %s → %d\n%s", strings.Join(args, " "), code, out)
	return string(out), code
}

// HostPort is the loopback port forwarded to guestPort.
func (vm *VM) HostPort(guestPort int) int { return vm.ports[guestPort] }
