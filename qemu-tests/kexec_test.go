package qemutests

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	qvm "github.com/baton-init/baton/qemu-tests/vm"
)

// TestQEMUKexec boots Debian's generic kernel with the boot disk at /boot and, in one guest:
// refused loads (not a kernel, by both methods; a truncated bzImage; an unknown payload
// compression) that stop nothing; a fast kexec into the same kernel with a marker on the
// command line; a fast kexec into Debian's cloud kernel (LZ4 payload) booted with
// lockdown=integrity, where kexec_load is refused and the fallback is checked; then poweroff.
// The file method's jump is TestQEMUWatchdog's ([kexec] method = "file").
func TestQEMUKexec(t *testing.T) {
	t.Parallel()
	vmlinuz, modules := kernel(t, "amd64")
	initrd, disk := testImage(t, modules)
	vm := Boot(t, BootOptions{Kernel: vmlinuz, Initrd: initrd, Disk: disk, Forward: []int{webPort, testPort, controlPort}})
	vm.WaitFor(`baton: all services started`, bootTimeout)
	vm.Get(t, webPort, "/")
	info := func(t *testing.T) (cmdline, release string) {
		var i struct{ Cmdline, Release string }
		mustJSON(t, vm.Get(t, testPort, "/info"), &i)
		return i.Cmdline, i.Release
	}
	// The firmware's memory map as the kernel keeps it (/sys/firmware/memmap/N/type), which
	// the fast method gives the next kernel: the old code's holes must not add to it.
	firmwareMap := func(t *testing.T) []string {
		var types []string
		for n := 0; n < 256; n++ {
			var f struct {
				Exists  bool
				Content string
			}
			mustJSON(t, vm.Get(t, testPort, fmt.Sprintf("/file?path=/sys/firmware/memmap/%d/type", n)), &f)
			if !f.Exists {
				break
			}
			types = append(types, strings.TrimSpace(f.Content))
		}
		return types
	}
	bootMap := firmwareMap(t)
	// The holes go in one memmap= with its baton.spared= checksum; a reused command line
	// carries neither into the next one.
	spared := regexp.MustCompile(`(^| )memmap=\S+ baton\.spared=[0-9a-f]{8}( |$)`)
	checkSpared := func(t *testing.T, cmdline string) {
		if !spared.MatchString(cmdline) || strings.Count(cmdline, "memmap=") != 1 || strings.Count(cmdline, "baton.spared=") != 1 {
			t.Errorf("the next kernel's command line should hold one memmap= and one baton.spared=: %q", cmdline)
		}
		if got := firmwareMap(t); !reflect.DeepEqual(got, bootMap) {
			t.Errorf("the firmware's memory map grew across the kexec: %q, at boot %q", got, bootMap)
		}
	}

	vm.Run(t, "refused load costs no downtime", func(t *testing.T) {
		// No request may fail: the poller's timeout (NoFailTimeout) tells a slow answer from a
		// lost one.
		p := vm.Poll(webPort, qvm.PollOptions{})
		p.WaitAnswers(t, 1, 30*time.Second)
		out, code := vm.Initctl(t, "kexec", "--kernel", "/etc/baton/baton.toml")
		if code != 1 || !strings.Contains(out, "exec format error") || !strings.Contains(out, "not a kernel") || !strings.Contains(out, "/etc/baton/baton.toml") {
			t.Errorf("kexec of a non-kernel: exit %d\n%s", code, out)
		}
		out, code = vm.Initctl(t, "kexec", "--method", "file", "--kernel", "/etc/baton/baton.toml")
		if code != 1 || !strings.Contains(out, "exec format error") || !strings.Contains(out, "kexec_file_load") {
			t.Errorf("kexec --method file of a non-kernel: exit %d\n%s", code, out)
		}
		// A bzImage cut short, and one whose payload has an unknown compression: the fast
		// method reads the payload at load time and refuses both, naming the cause.
		for file, want := range map[string]string{"/boot/vmlinuz-truncated": "truncated", "/boot/vmlinuz-unknown": "unknown payload compression"} {
			out, code = vm.Initctl(t, "kexec", "--kernel", file)
			if code != 1 || !strings.Contains(out, want) || !strings.Contains(out, file) {
				t.Errorf("kexec of %s: exit %d\n%s", file, code, out)
			}
		}
		out, code = vm.Initctl(t, "kexec", "--kernel", "/boot/nonexistent")
		if code != 1 || !strings.Contains(out, "no such file") {
			t.Errorf("kexec of a missing file: exit %d\n%s", code, out)
		}
		vm.Get(t, webPort, "/")
		r := p.End()
		t.Logf("poller while the refused loads were tried: %s", r)
		if len(r.Failed) != 0 {
			t.Errorf("web failed requests while the refused loads were tried: %s", r)
		}
		// A load without the jump, then an unload: the kernel's own word on each. The file
		// method here: the fast one's load (the kernel extracted in the guest, tens of seconds
		// of the one emulated CPU under TCG) is what the kexecs below do.
		if out, code := vm.Initctl(t, "kexec", "--load-only", "--method", "file"); code != 0 || !strings.Contains(out, "/sys/kernel/kexec_loaded: true") ||
			!strings.Contains(out, "method: file") {
			t.Errorf("kexec --load-only: exit %d\n%s", code, out)
		}
		if out, code := vm.Initctl(t, "kexec", "--unload"); code != 0 || !strings.Contains(out, "/sys/kernel/kexec_loaded: false") {
			t.Errorf("kexec --unload: exit %d\n%s", code, out)
		}
	})

	// Downtime from here on: a poller that gives up on a request after GapTimeout, so requests
	// hanging on a guest that is down never keep new ones from seeing it come back.
	p := qvm.StartPoller(vm, webPort)
	defer p.End()
	p.WaitAnswers(t, 1, 30*time.Second)

	vm.Run(t, "same kernel with a marker", func(t *testing.T) {
		out, code := vm.Initctl(t, "kexec", "--method", "fast", "--append", "baton.test.marker=first")
		if code != 0 || !strings.Contains(out, "loaded /boot/slot-a/vmlinuz") || !strings.Contains(out, "method: fast (KASLR: physical") {
			t.Fatalf("kexec: %d\n%s", code, out)
		}
		// Under TCG (this guest) the old system's code pages are kept from the next kernel.
		if !regexp.MustCompile(`old code spared \([1-9][0-9]* MiB, [1-9][0-9]* memmap= holes\)`).MatchString(out) {
			t.Errorf("kexec under TCG did not spare the old code pages:\n%s", out)
		}
		_, jump := vm.WaitForAt(`kexec_core: Starting new kernel`, 60*time.Second)
		_, up := vm.WaitForAt(`baton: all services started`, bootTimeout)
		g := p.WaitGap(t, jump, 60*time.Second)
		t.Logf("HTTP downtime of the kexec: %v (first answer %v after the console said all services started)", g, g.To.Sub(up).Round(time.Millisecond))
		cmdline, _ := info(t)
		if !strings.Contains(cmdline, "baton.test.marker=first") || !regexp.MustCompile(`baton.prev=[0-9a-f]+`).MatchString(cmdline) {
			t.Errorf("new kernel's command line %q lacks the marker", cmdline)
		}
		checkSpared(t, cmdline)
		if out, _ := vm.Initctl(t, "analyze"); !strings.Contains(out, "previous shutdown (kexec)") || !strings.Contains(out, "stop services") ||
			!strings.Contains(out, "kernel loaded with method fast") {
			t.Errorf("analyze does not show the previous shutdown:\n%s", out)
		}
	})

	vm.Run(t, "kernel update to the cloud kernel", func(t *testing.T) {
		_, before := info(t)
		// The cloud kernel boots with lockdown=integrity, which forbids kexec_load (below).
		out, code := vm.Initctl(t, "kexec", "--kernel", "/boot/vmlinuz-cloud", "--append", "lockdown=integrity")
		if code != 0 || !strings.Contains(out, "method: fast") {
			t.Fatalf("kexec: %d\n%s", code, out)
		}
		_, jump := vm.WaitForAt(`Linux version .*cloud-amd64`, 60*time.Second)
		_, up := vm.WaitForAt(`baton: all services started`, bootTimeout)
		g := p.WaitGap(t, jump, 90*time.Second)
		t.Logf("HTTP downtime of the kexec into the cloud kernel: %v (first answer %v after all services started)", g, g.To.Sub(up).Round(time.Millisecond))
		cmdline, after := info(t)
		if before == after || !strings.HasSuffix(after, "-cloud-amd64") {
			t.Errorf("uname -r %q → %q, want the cloud kernel", before, after)
		}
		if strings.Contains(cmdline, "baton.test.marker") == false {
			t.Errorf("reused command line lost the earlier marker: %q", cmdline)
		}
		checkSpared(t, cmdline)
	})

	vm.Run(t, "lockdown refuses the fast method", func(t *testing.T) {
		pl := vm.Poll(webPort, qvm.PollOptions{})
		pl.WaitAnswers(t, 1, 30*time.Second)
		// kexec_load is refused under lockdown; kexec_file_load then loads the image if its
		// signature is trusted by this kernel's keyrings, else both refusals are named.
		out, code := vm.Initctl(t, "kexec", "--load-only")
		switch {
		case code == 0 && strings.Contains(out, "method: file (the fast method was refused: kexec_load") && strings.Contains(out, "locked down (integrity)"):
			t.Logf("fell back to kexec_file_load:\n%s", out)
			if out, code := vm.Initctl(t, "kexec", "--unload"); code != 0 {
				t.Errorf("kexec --unload: %d\n%s", code, out)
			}
		case code == 1 && strings.Contains(out, "both methods refused") && strings.Contains(out, "fast: kexec_load: operation not permitted — the kernel is locked down (integrity)") &&
			strings.Contains(out, "file: kexec_file_load"):
			t.Logf("both refused, both named:\n%s", out)
		default:
			t.Errorf("kexec --load-only under lockdown: exit %d\n%s", code, out)
		}
		vm.Get(t, webPort, "/")
		r := pl.End()
		if len(r.Failed) != 0 {
			t.Errorf("web failed requests while kexec was refused: %s", r)
		}
	})

	vm.Initctl(t, "poweroff")
	if code := vm.WaitExit(60 * time.Second); code != 0 {
		t.Errorf("QEMU exited %d after poweroff", code)
	}
}

// TestQEMUFirmwareReboot boots the boot disk through OVMF and systemd-boot, reboots through
// the firmware with initctl reboot, and checks the machine comes back and says why; then a
// fast kexec from that UEFI boot, and the ACPI power button in the kernel it started.
func TestQEMUFirmwareReboot(t *testing.T) {
	t.Parallel()
	_, modules := kernel(t, "amd64")
	_, disk := testImage(t, modules)
	vm := Boot(t, BootOptions{Disk: disk, Reboot: true, Forward: []int{webPort, controlPort}})
	vm.WaitFor(`baton: all services started`, bootTimeout)
	p := qvm.StartPoller(vm, webPort)
	defer p.End()
	p.WaitAnswers(t, 1, 30*time.Second)
	if out, code := vm.Initctl(t, "reboot"); code != 0 {
		t.Fatalf("reboot: %d %s", code, out)
	}
	vm.WaitFor(`shutdown complete action=reboot`, 30*time.Second)
	_, again := vm.WaitForAt(`Linux version`, 60*time.Second) // through firmware and boot loader again
	_, up := vm.WaitForAt(`baton: all services started`, bootTimeout)
	g := p.WaitGap(t, again, 90*time.Second)
	t.Logf("HTTP downtime of the firmware reboot: %v (first answer %v after all services started)", g, g.To.Sub(up).Round(time.Millisecond))
	if out, _ := vm.Initctl(t, "analyze"); !strings.Contains(out, "previous shutdown (reboot)") {
		t.Errorf("analyze does not show the previous reboot:\n%s", out)
	}
	// A fast kexec from a UEFI boot: the next kernel gets no efi_info (README: it boots without
	// EFI runtime services, finding ACPI through the RSDP address); the power button below
	// needs ACPI to work in it.
	out, code := vm.Initctl(t, "kexec", "--method", "fast")
	if code != 0 || !strings.Contains(out, "method: fast") {
		t.Fatalf("kexec --method fast after a UEFI boot: %d\n%s", code, out)
	}
	_, jump := vm.WaitForAt(`kexec_core: Starting new kernel`, 2*time.Minute)
	_, up = vm.WaitForAt(`baton: all services started`, bootTimeout)
	g = p.WaitGap(t, jump, 90*time.Second)
	t.Logf("HTTP downtime of a fast kexec after a UEFI boot: %v (first answer %v after all services started)", g, g.To.Sub(up).Round(time.Millisecond))
	// The ACPI power button, as a hypervisor's "shut down" presses it.
	vm.Monitor("system_powerdown")
	vm.WaitFor(`power request via="power button" action=poweroff`, 30*time.Second)
	if code := vm.WaitExit(60 * time.Second); code != 0 {
		t.Errorf("QEMU exited %d after the power button", code)
	}
}
