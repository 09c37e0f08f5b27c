package qemutests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-init/baton/images"
)

// watchdogTimeout is [watchdog] timeout in testdata/watchdog.toml. It must cover a kexec from
// the old baton's last pet to the new one's first: under TCG that is ~35 s (~20 s from the jump
// to the new kernel's first console line: purgatory hashing the segments, the bzImage
// decompressing, the console registering; ~10 s to /init; ~2 s to the watchdog step), and
// more when other guests share the host's CPUs. With 30 s a healthy kexec was reset.
const watchdogTimeout = 90 * time.Second

// watchdogDisk builds the boot disk of the watchdog appliance (testdata/watchdog.toml: the
// i6300esb module and [watchdog]), from the binaries testImage built.
func watchdogDisk(t *testing.T, modules string) string {
	t.Helper()
	testImage(t, modules) // builds the binaries in out/qemu-tests/bin and the TLS dir
	dir := filepath.Join(repoRoot, "out/qemu-tests")
	spec := testSpec(dir, modules, "")
	spec.Config = filepath.Join(repoRoot, "qemu-tests/testdata/watchdog.toml")
	spec.KernelModules = []string{modules} // Debian's cloud kernel has no i6300esb
	img, _, err := images.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	generic, _ := kernel(t, "amd64")
	if _, err := img.AddManifest(generic); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := img.Write(&buf, "gzip"); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	initrd, disk := filepath.Join(tmp, "initramfs.img"), filepath.Join(tmp, "disk.img")
	if err := os.WriteFile(initrd, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	err = images.BuildDisk(disk, images.DiskSpec{Bootloader: "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
		Kernel: generic, Initrd: initrd, Cmdline: "console=ttyS0 panic=-1"})
	if err != nil {
		t.Fatal(err)
	}
	return disk
}

// hangImage is an image whose /init sleeps forever without touching the watchdog: a new boot
// that hangs, which only the watchdog armed by the previous kernel can end. It carries a
// manifest and a config, so the upload is accepted.
func hangImage(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	src := filepath.Join(tmp, "hang.go")
	prog := "package main\n\nimport \"time\"\n\nfunc main() {\n\tfor {\n\t\ttime.Sleep(time.Hour)\n\t}\n}\n"
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(tmp, "hang")
	cmd := exec.Command("go", "build", "-o", bin, src)
	cmd.Dir, cmd.Env = tmp, append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build hang: %v\n%s", err, out)
	}
	img := images.NewInitramfs()
	if err := img.AddFile("/init", bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(repoRoot, "qemu-tests/testdata/watchdog.toml"))
	if err != nil {
		t.Fatal(err)
	}
	img.AddData("/etc/baton/baton.toml", cfg, 0o644)
	if _, err := img.AddManifest(""); err != nil {
		t.Fatal(err)
	}
	return writeImage(t, img, filepath.Join(tmp, "hang.img"))
}

// TestQEMUWatchdog boots the disk through OVMF with QEMU's i6300esb watchdog and
// [watchdog] timeout = 90s: a kexec keeps it armed and the new boot's PID 1 takes it over in
// time (no firmware reset), then pets it (the machine outlives the timeout); then an update to
// an image whose /init hangs: the watchdog, still counting from the old kernel's last pet,
// resets the machine, the firmware boots the confirmed slot, and the update shows rolled back.
func TestQEMUWatchdog(t *testing.T) {
	t.Parallel()
	generic, modules := kernel(t, "amd64")
	disk := watchdogDisk(t, modules)
	hang := hangImage(t)
	vm := Boot(t, BootOptions{Disk: disk, Reboot: true, Forward: []int{webPort, controlPort}, Devices: []string{"i6300esb"}})
	vm.WaitFor(`baton: watchdog armed.*timeout=`+watchdogTimeout.String(), bootTimeout)
	vm.WaitFor(`baton: all services started`, bootTimeout)

	// A kexec: the old kernel does not stop the watchdog (stop_on_reboot=0), and the new boot
	// takes it over before it fires.
	if out, code := vm.Initctl(t, "kexec"); code != 0 {
		t.Fatalf("kexec: exit %d\n%s", code, out)
	}
	_, lastPet := vm.WaitForAt(`baton: watchdog stays armed across the kexec`, 60*time.Second)
	line, armed := vm.WaitForAt(`baton: watchdog armed|BdsDxe`, bootTimeout)
	if strings.Contains(line, "BdsDxe") {
		t.Fatalf("the watchdog reset the machine %s after the kexec's last pet, before the new boot took it over", armed.Sub(lastPet).Round(time.Millisecond))
	}
	t.Logf("kexec: the new boot took the watchdog over %s after the old one's last pet (timeout %s)", armed.Sub(lastPet).Round(time.Millisecond), watchdogTimeout)
	vm.WaitFor(`baton: all services started`, bootTimeout)

	// PID 1 pets it: the machine outlives the timeout. What is tested is that nothing happens
	// (no firmware boot), so this one waits.
	time.Sleep(time.Until(armed.Add(watchdogTimeout + 10*time.Second)))
	if n := strings.Count(strings.Join(vm.Console(), "\n"), "BdsDxe: loading"); n != 1 {
		t.Fatalf("the firmware booted again while PID 1 pets the watchdog (BdsDxe ×%d)", n)
	}

	// An update whose /init hangs: only the watchdog can end that boot. The console says when
	// the old kernel last petted it, when the trial kernel started, and when the firmware came.
	type result struct {
		out  string
		code int
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		out, code := vm.Initctl(t, "update", "--kernel", generic, "--initrd", hang, "--timeout", "5m")
		done <- result{out, code}
	}()
	_, lastPet = vm.WaitForAt(`baton: watchdog stays armed across the kexec`, 2*time.Minute)
	// Whether the trial kernel got as far as its first line before the reset depends on how
	// loaded the host is (the jump alone can take a minute under TCG and stress): only the
	// reset is asserted.
	_, reset := vm.WaitForAt(`BdsDxe: loading`, 2*watchdogTimeout+2*time.Minute)
	t.Logf("hanging trial: firmware %s after the last pet (timeout %s)", reset.Sub(lastPet).Round(time.Millisecond), watchdogTimeout)
	r := <-done
	if r.code != 1 || !strings.Contains(r.out, "rolled back") {
		t.Fatalf("update to an image that hangs: exit %d\n%s", r.code, r.out)
	}
	console := strings.Join(vm.Console(), "\n")
	if n, fw := strings.Count(console, "Linux version"), strings.Count(console, "BdsDxe: loading"); n != 4 || fw != 2 {
		t.Errorf("Linux version ×%d, firmware ×%d; want 4 (first boot, kexec, hanging trial, firmware boot) and 2", n, fw)
	}
	t.Logf("update to a hanging image rolled back by the watchdog and the firmware in %s", time.Since(start).Round(time.Second))
	out, _ := vm.Initctl(t, "update", "--status")
	if !slotIs(out, "a", "confirmed, firmware default") || !strings.Contains(out, "(slot a)") || !strings.Contains(out, "rolled-back") {
		t.Errorf("status after the watchdog reset:\n%s", out)
	}
	if got := vm.Get(t, webPort, "/"); !strings.Contains(got, "hello") {
		t.Errorf("web after the rollback: %q", got)
	}
}
