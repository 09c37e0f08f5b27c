package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/images"
	"github.com/baton-init/baton/qemu-tests/handoffbench"
	"github.com/baton-init/baton/qemu-tests/vm"
)

// kexecRun is one kexec of the change, measured by the host-side poller.
type kexecRun struct {
	DowntimeMs float64 `json:"downtime_ms"` // last good answer before → first after
	CommandMs  float64 `json:"command_ms"`  // initctl update: upload, apply, kexec, until confirmed
	Failed     int     `json:"failed"`      // requests that failed (in the downtime: refused, reset, timed out)
	Answers    int     `json:"answers"`
	Error      string  `json:"error,omitempty"`
}

// qemuEnv is the QEMU phase's inputs: the run's own copies (out/ may be rebuilt while the
// benchmark runs, and a boot disk made from one image would not match the image a VM boots)
// and two images that differ only in /init, the change applied both ways.
type qemuEnv struct {
	vmlinuz, initctl, tlsDir string
	v2                       string    // the new init binary (reexec --binary)
	images                   [2]string // /init = out/bin/init, /init = v2
	disk                     string    // boot disk, the first image in slot a
}

const cmdline = "console=ttyS0 panic=-1 quiet"

func setupQEMU(t *vm.ProgramTB, root, v2 string) *qemuEnv {
	vmlinuz, modules := vm.Kernel(t, "amd64")
	_, cloudModules := vm.Kernel(t, "cloud-amd64")
	dir := t.TempDir()
	e := &qemuEnv{vmlinuz: vmlinuz, v2: v2, initctl: filepath.Join(dir, "initctl"), tlsDir: filepath.Join(dir, "tls"),
		disk: filepath.Join(dir, "disk.img")}
	bin := filepath.Join(dir, "bin")
	for _, c := range [][2]string{{"out/bin", bin}, {"out/bin/initctl", e.initctl}, {"out/tls", e.tlsDir}} {
		if err := vm.CopyPath(filepath.Join(root, c[0]), c[1]); err != nil {
			t.Fatalf("%v (make image builds it)", err)
		}
	}
	for i, init := range []string{filepath.Join(bin, "init"), v2} {
		// As make image builds it (examples/baton.toml, both kernels' modules, the same carried
		// modules and TLS material), so the running slot is recognized and initctl connects.
		img, _, err := images.Build(images.Spec{Config: filepath.Join(root, "examples/baton.toml"), Init: init, BinDir: bin,
			KernelModules: []string{modules, cloudModules}, Carry: []string{"nls_cp437", "nls_utf8", "nls_ascii", "virtio_rng"},
			TLSDir: e.tlsDir})
		if err != nil {
			t.Fatalf("image with /init = %s: %v", init, err)
		}
		if _, err := img.AddManifest(vmlinuz); err != nil {
			t.Fatalf("%v", err)
		}
		var buf bytes.Buffer
		if err := img.Write(&buf, "zstd"); err != nil {
			t.Fatalf("%v", err)
		}
		e.images[i] = filepath.Join(dir, fmt.Sprintf("image-%d.img", i+1))
		if err := os.WriteFile(e.images[i], buf.Bytes(), 0o644); err != nil {
			t.Fatalf("%v", err)
		}
	}
	if err := images.BuildDisk(e.disk, images.DiskSpec{Bootloader: "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
		Kernel: vmlinuz, Initrd: e.images[0], Cmdline: cmdline}); err != nil {
		t.Fatalf("boot disk: %v (make qemu installs systemd-boot-efi)", err)
	}
	return e
}

// qemuPhase boots the demo appliance as PID 1, re-executes it into v2 under load (each cycle
// uploads v2), then applies the same change — an image whose only difference is /init — by
// initctl update, which changes the init binary by a kexec, as many times under a poller.
func qemuPhase(t *vm.ProgramTB, e *qemuEnv, cycles, workers, longLived int) (handoffbench.ReexecResult, []kexecRun) {
	g := vm.Boot(t, vm.BootOptions{Kernel: e.vmlinuz, Initrd: e.images[0], Disk: e.disk, Append: "quiet", Quiet: !t.Verbose,
		Forward: []int{vm.WebPort, vm.StreamPort, vm.ControlPort}, Initctl: e.initctl, TLSDir: e.tlsDir})
	g.WaitFor(`baton: all services started`, 180*time.Second)
	c, err := control.NewRemote(fmt.Sprintf("127.0.0.1:%d", g.HostPort(vm.ControlPort)), e.tlsDir)
	if err != nil {
		t.Fatalf("%v", err)
	}
	// The remote API comes up after the services (its TLS setup waits for entropy); its log
	// line is not on the console, so ask it.
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(time.Second) {
		if _, err := c.Version(); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the remote API did not answer within 3 minutes: %v", err)
		}
	}
	a := &handoffbench.Appliance{Client: c, WebAddr: fmt.Sprintf("127.0.0.1:%d", g.HostPort(vm.WebPort)),
		StreamAddr: fmt.Sprintf("127.0.0.1:%d", g.HostPort(vm.StreamPort))}
	res := handoffbench.ReexecPhase(a, e.v2, cycles, workers, longLived)
	res.Name = "reexec (QEMU guest)"
	fmt.Fprintf(os.Stderr, "reexec (QEMU guest): %d re-execs, %d requests, %d failed, pause p50 %.1fms\n",
		res.PauseMs.N, res.Requests, res.Failed, res.PauseMs.P50)
	var kexecs []kexecRun
	for i := 0; i < cycles; i++ {
		// The running image has /init of images[0] (the first boot) or of the last update.
		k := kexecUpdate(t, g, e.vmlinuz, e.images[(i+1)%2])
		fmt.Fprintf(os.Stderr, "kexec (QEMU guest) %d: downtime %.0fms, %d failed, command %.1fs %s\n", i+1,
			k.DowntimeMs, k.Failed, k.CommandMs/1000, k.Error)
		kexecs = append(kexecs, k)
		if k.Error != "" {
			break
		}
	}
	g.Initctl(t, "poweroff")
	g.WaitExit(60 * time.Second)
	return res, kexecs
}

// kexecUpdate applies image (the running kernel, another /init) with initctl update, which
// kexecs into it, under a poller.
func kexecUpdate(t *vm.ProgramTB, g *vm.VM, kernel, image string) kexecRun {
	p := vm.StartPoller(g, vm.WebPort)
	defer p.End()
	p.WaitAnswers(t, 20, 60*time.Second) // steady state: good answers before the command
	at := time.Now()
	out, code := g.Initctl(t, "update", "--kernel", kernel, "--initrd", image, "--timeout", "5m")
	var k kexecRun
	k.CommandMs = float64(time.Since(at).Microseconds()) / 1000
	switch {
	case code != 0:
		k.Error = fmt.Sprintf("initctl update: exit %d: %s", code, strings.TrimSpace(out))
	case !strings.Contains(out, "kexec into slot"):
		k.Error = "initctl update did not kexec: " + strings.TrimSpace(out)
	}
	if k.Error != "" {
		return k
	}
	// The downtime is the gap around the next kernel's /init, which is certainly inside it (the
	// command's start is not: the upload and the apply come first, with web answering, and so
	// may the moments after the load, before the services stop), as bench-kexec measures it.
	_, initAt := g.WaitForAt(`baton: baton starting as PID 1`, 60*time.Second)
	gap := p.WaitGap(t, initAt, 120*time.Second)
	r := p.End()
	k.DowntimeMs, k.Failed, k.Answers = float64(gap.Length().Microseconds())/1000, len(r.Failed), r.Answers
	return k
}
