// Package vm boots baton images under QEMU for the tests and benchmarks: serial console
// captured line by line with host arrival times, port forwards on loopback, QEMU's monitor,
// initctl against the guest's remote API, and an HTTP poller that measures downtime.
package vm

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
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
}

func freePort(t TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
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
	netdev := "user,id=n0"
	for _, gp := range o.Forward {
		hp := freePort(t)
		vm.ports[gp] = hp
		netdev += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", hp, gp)
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
	if !o.Reboot {
		args = append(args, "-no-reboot")
	}
	if o.Kernel != "" {
		args = append(args, "-kernel", o.Kernel, "-initrd", o.Initrd,
			"-append", strings.TrimSpace("console=ttyS0 panic=-1 "+o.Append))
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
			vm.t.Logf("console: %s", line)
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
	vm.t.Helper()
	line, _ := vm.WaitForAt(re, timeout)
	return line
}

// WaitForAt is WaitFor that also returns when the line reached the host.
func (vm *VM) WaitForAt(re string, timeout time.Duration) (string, time.Time) {
	vm.t.Helper()
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
	vm.t.Helper()
	vm.failT(vm.t, format, args...)
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
	vm.t.Helper()
	select {
	case <-vm.exited:
	case <-time.After(timeout):
		vm.fail("QEMU still running after %s", timeout)
	}
	return vm.cmd.ProcessState.ExitCode()
}

// URL is the host-side address of a forwarded guest port.
func (vm *VM) URL(guestPort int, path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", vm.ports[guestPort], path)
}

var client = &http.Client{Timeout: 5 * time.Second}

// Get fetches a guest URL through the port forward and returns the body; non-200 fails t.
// Connection errors are retried for a few seconds: "started" readiness means the service
// was executed, not that it listens yet, and QEMU's forward resets connections until it does.
func (vm *VM) Get(t TB, guestPort int, path string) string {
	t.Helper()
	return vm.do(t, "GET", guestPort, path)
}

// Post is Get with POST.
func (vm *VM) Post(t TB, guestPort int, path string) string {
	t.Helper()
	return vm.do(t, "POST", guestPort, path)
}

func (vm *VM) do(t TB, method string, guestPort int, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequest(method, vm.URL(guestPort, path), nil)
		resp, err := client.Do(req)
		if err != nil {
			if time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			vm.failT(t, "%s %s: %v", method, path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			vm.failT(t, "%s %s: %s: %s", method, path, resp.Status, body)
		}
		return string(body)
	}
}

// Monitor sends one command to QEMU's human monitor.
func (vm *VM) Monitor(command string) {
	vm.t.Helper()
	c, err := net.Dial("unix", vm.monitor)
	if err != nil {
		vm.fail("monitor: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	_, _ = r.ReadString(')') // the "(qemu)" prompt
	if _, err := fmt.Fprintf(c, "%s\n", command); err != nil {
		vm.fail("monitor %q: %v", command, err)
	}
	_, _ = r.ReadString(')') // the echo, then the next prompt once the command ran
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
