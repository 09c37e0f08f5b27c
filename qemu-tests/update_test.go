package qemutests

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/images"
	qvm "github.com/baton-init/baton/qemu-tests/vm"
)

// updateImage builds the test appliance with web built as version, or with another program at
// /bin/web, and returns the initramfs.
func updateImage(t *testing.T, modules, name string, web string) string {
	t.Helper()
	_, cloudModules := kernel(t, "cloud-amd64")
	dir := filepath.Join(repoRoot, "out/qemu-tests")
	spec := testSpec(dir, modules, cloudModules)
	spec.Files["/bin/web"] = web
	img, _, err := images.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	generic, _ := kernel(t, "amd64")
	if _, err := img.AddManifest(generic); err != nil {
		t.Fatal(err)
	}
	return writeImage(t, img, filepath.Join(t.TempDir(), name))
}

// webBinary builds the demo web service reporting version.
func webBinary(t *testing.T, version string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "web")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", out, "./examples/web")
	cmd.Dir, cmd.Env = repoRoot, append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build web: %v\n%s", err, b)
	}
	return out
}

// slotIs reports whether update --status shows slot in state.
func slotIs(status, slot, state string) bool {
	return regexp.MustCompile(`(?m)^slot ` + slot + `:\s+` + regexp.QuoteMeta(state) + `\s`).MatchString(status)
}

// TestQEMUUpdate ships new images to a running appliance through the remote API, in one guest:
// bad uploads change nothing; a services-only update applies in place with no failed request
// and no reboot; one whose web never gets ready is undone by itself; a kernel update takes one
// kexec into the new slot, which confirms itself; one whose web never gets ready after the
// kexec comes back on the previous image by itself.
func TestQEMUUpdate(t *testing.T) {
	t.Parallel()
	generic, modules := kernel(t, "amd64")
	cloud, _ := kernel(t, "cloud-amd64")
	initrd, disk := testImage(t, modules)
	v2 := updateImage(t, modules, "v2.img", webBinary(t, "test2"))
	// The stream program as web: it exits at once (its own socket is baton's), never READY=1.
	broken := updateImage(t, modules, "broken.img", filepath.Join(hostBin, "stream"))
	vm := Boot(t, BootOptions{Kernel: generic, Initrd: initrd, Disk: disk, Forward: []int{webPort, testPort, controlPort}, RNG: true})
	vm.WaitFor(`baton: all services started`, bootTimeout)
	if out, code := vm.Initctl(t, "update", "--status"); code != 0 || !strings.Contains(out, "(slot a)") {
		t.Fatalf("update --status before any update: exit %d\n%s", code, out)
	}
	release := func(t *testing.T) string {
		var i struct{ Release string }
		mustJSON(t, vm.Get(t, testPort, "/info"), &i)
		return i.Release
	}
	kernelBefore := release(t)

	vm.Run(t, "bad uploads change nothing", func(t *testing.T) {
		cut := filepath.Join(t.TempDir(), "cut.img")
		b, _ := os.ReadFile(v2)
		os.WriteFile(cut, b[:len(b)/3], 0o644)
		out, code := vm.Initctl(t, "update", "--kernel", generic, "--initrd", cut)
		if code != 1 || !strings.Contains(out, "initrd") {
			t.Errorf("truncated initramfs: exit %d\n%s", code, out)
		}
		// A digest that does not match what arrives (corrupted in transit).
		cfg, err := control.ClientTLS(hostTLS)
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: time.Minute}
		req, _ := http.NewRequest("PUT", fmt.Sprintf("https://127.0.0.1:%d/v1/update/files/initramfs.img?sha256=%064d",
			vm.HostPort(controlPort), 0), bytes.NewReader(b))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("digest mismatch: HTTP %d, want 400", resp.StatusCode)
		}
		out, _ = vm.Initctl(t, "update", "--status")
		if !slotIs(out, "b", "empty") || !slotIs(out, "a", "confirmed, firmware default") {
			t.Errorf("slots after bad uploads:\n%s", out)
		}
	})

	vm.Run(t, "services only: in place, no failed request", func(t *testing.T) {
		p := vm.Poll(webPort, qvm.PollOptions{})
		out, code := vm.Initctl(t, "update", "--kernel", generic, "--initrd", v2)
		r := p.End()
		if code != 0 || !strings.Contains(out, ": in-place") || !strings.Contains(out, "upgrade: web") || !strings.Contains(out, "confirmed") {
			t.Fatalf("update: exit %d\n%s", code, out)
		}
		t.Logf("poller during the in-place update: %s", r)
		if len(r.Failed) != 0 {
			t.Errorf("web failed requests during the in-place update: %s", r)
		}
		if got := vm.Get(t, webPort, "/"); !strings.Contains(got, "test2") {
			t.Errorf("web after the update: %q", got)
		}
		if release(t) != kernelBefore || strings.Count(strings.Join(vm.Console(), "\n"), "Linux version") != 1 {
			t.Error("the kernel restarted for a services-only update")
		}
		out, _ = vm.Initctl(t, "update", "--status")
		if !slotIs(out, "b", "confirmed, firmware default") || !strings.Contains(out, "(slot b)") {
			t.Errorf("status after the update:\n%s", out)
		}
	})

	vm.Run(t, "in place, never ready: rolled back", func(t *testing.T) {
		p := vm.Poll(webPort, qvm.PollOptions{})
		out, code := vm.Initctl(t, "update", "--kernel", generic, "--initrd", broken)
		r := p.End()
		if code != 1 || !strings.Contains(out, "rolled back") || !strings.Contains(out, "before READY=1") {
			t.Fatalf("broken update: exit %d\n%s", code, out)
		}
		t.Logf("poller during the undone update: %s", r)
		if len(r.Failed) != 0 {
			t.Errorf("web failed requests while a broken update was tried and undone: %s", r)
		}
		if got := vm.Get(t, webPort, "/"); !strings.Contains(got, "test2") {
			t.Errorf("web after the rollback: %q", got)
		}
	})

	vm.Run(t, "kernel update: one kexec, confirmed", func(t *testing.T) {
		out, code := vm.Initctl(t, "update", "--kernel", cloud, "--initrd", v2, "--timeout", "4m")
		if code != 0 || !strings.Contains(out, ": kexec") || !strings.Contains(out, "the kernel changed") || !strings.Contains(out, "confirmed") {
			t.Fatalf("kernel update: exit %d\n%s", code, out)
		}
		vm.WaitFor(`baton: all services started`, bootTimeout) // the new boot's, already printed
		if r := release(t); r == kernelBefore || !strings.Contains(r, "cloud") {
			t.Errorf("kernel %q after the update, was %q", r, kernelBefore)
		}
		out, _ = vm.Initctl(t, "update", "--status")
		if !slotIs(out, "a", "confirmed, firmware default") {
			t.Errorf("status after the kernel update:\n%s", out)
		}
	})

	vm.Run(t, "kexec, never ready: back on the previous image by itself", func(t *testing.T) {
		out, code := vm.Initctl(t, "update", "--kernel", generic, "--initrd", broken, "--timeout", "5m")
		if code != 1 || !strings.Contains(out, "rolled back") || !strings.Contains(out, "web not ready within confirm_timeout") {
			t.Fatalf("broken kexec update: exit %d\n%s", code, out)
		}
		// The trial boot gave up, then kexec'd back into the confirmed slot.
		vm.WaitFor(`update rolled back`, bootTimeout)
		vm.WaitFor(`kexec_core: Starting new kernel`, bootTimeout)
		vm.WaitFor(`baton: all services started`, bootTimeout)
		if r := release(t); !strings.Contains(r, "cloud") {
			t.Errorf("after the rollback the kernel is %q, want the confirmed slot's cloud kernel", r)
		}
		if got := vm.Get(t, webPort, "/"); !strings.Contains(got, "test2") {
			t.Errorf("web after the rollback: %q", got)
		}
		out, _ = vm.Initctl(t, "update", "--status")
		if !strings.Contains(out, "rolled-back") || !strings.Contains(out, "reason: web not ready") {
			t.Errorf("status after the rollback:\n%s", out)
		}
		if out, _ := vm.Initctl(t, "analyze"); !strings.Contains(out, "rolled back: web not ready") {
			t.Errorf("analyze does not say the update was rolled back:\n%s", out)
		}
	})
}

// panicImage is an image whose kernel panics at once: it has no /init (but a manifest and a
// config, so the upload is accepted: a panic is what the trial boot is there to survive).
func panicImage(t *testing.T) string {
	t.Helper()
	img := images.NewInitramfs()
	cfg, err := os.ReadFile(filepath.Join(repoRoot, "qemu-tests/testdata/appliance.toml"))
	if err != nil {
		t.Fatal(err)
	}
	img.AddData("/etc/baton/baton.toml", cfg, 0o644)
	if _, err := img.AddManifest(""); err != nil {
		t.Fatal(err)
	}
	return writeImage(t, img, filepath.Join(t.TempDir(), "panic.img"))
}

// TestQEMUUpdatePanicFirmware boots the boot disk through OVMF and ships an image whose new
// boot panics: panic=10 on the trial's command line reboots through the firmware, which boots
// the confirmed slot (the trial entry is never the default), and that boot records the
// update as rolled back.
func TestQEMUUpdatePanicFirmware(t *testing.T) {
	t.Parallel()
	generic, modules := kernel(t, "amd64")
	_, disk := testImage(t, modules)
	bad := panicImage(t)
	v2 := updateImage(t, modules, "v2.img", webBinary(t, "test2"))
	vm := Boot(t, BootOptions{Disk: disk, Reboot: true, Forward: []int{webPort, controlPort}})
	vm.WaitFor(`baton: all services started`, bootTimeout)
	// A services-only update, then a reboot through the firmware: it boots the updated slot.
	if out, code := vm.Initctl(t, "update", "--kernel", generic, "--initrd", v2); code != 0 {
		t.Fatalf("in-place update: exit %d\n%s", code, out)
	}
	if out, code := vm.Initctl(t, "reboot"); code != 0 {
		t.Fatalf("reboot: exit %d\n%s", code, out)
	}
	vm.WaitFor(`shutdown complete action=reboot`, 60*time.Second)
	vm.WaitFor(`Linux version`, bootTimeout)
	vm.WaitFor(`baton: all services started`, bootTimeout)
	if got := vm.Get(t, webPort, "/"); !strings.Contains(got, "test2") {
		t.Errorf("after a firmware reboot web answers %q, want the updated version", got)
	}
	if out, _ := vm.Initctl(t, "update", "--status"); !slotIs(out, "b", "confirmed, firmware default") || !strings.Contains(out, "(slot b)") {
		t.Errorf("after a firmware reboot:\n%s", out)
	}
	out, code := vm.Initctl(t, "update", "--kernel", generic, "--initrd", bad, "--timeout", "5m")
	if code != 1 || !strings.Contains(out, "rolled back") || !strings.Contains(out, "did not confirm it") {
		t.Fatalf("update to an image that panics: exit %d\n%s", code, out)
	}
	console := strings.Join(vm.Console(), "\n")
	if !strings.Contains(console, "Kernel panic") || strings.Count(console, "Linux version") < 4 {
		t.Errorf("no panic then firmware boot seen on the console (Linux version ×%d)", strings.Count(console, "Linux version"))
	}
	out, _ = vm.Initctl(t, "update", "--status")
	if !slotIs(out, "b", "confirmed, firmware default") || !strings.Contains(out, "(slot b)") || !strings.Contains(out, "rolled-back") {
		t.Errorf("status after the firmware brought the confirmed slot back:\n%s", out)
	}
	if got := vm.Get(t, webPort, "/"); !strings.Contains(got, "test2") {
		t.Errorf("web after the rollback: %q", got)
	}
}

// writeImage writes img, gzip-compressed as the test image is, to path and returns path.
func writeImage(t *testing.T, img *images.Initramfs, path string) string {
	t.Helper()
	var buf bytes.Buffer
	if err := img.Write(&buf, "gzip"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
