// Command bench-carry measures what keep_connections does for clients across initctl kexec
// (issue 15), beside the same kexec without it, in one run. It boots two guests of one image,
// the test appliance with qemu-tests/testdata/carry.toml:
//
//	keep        carry.toml as it is: web and stream keep their connections
//	no-keep     the same file with keep_connections = false: every service loses them
//
// and, the modes taking turns, kexecs each into the same kernel (--method fast) RUNS times under
// the load of TestQEMUKeepConnections (qemu-tests/carryload): 16 long-lived connections to stream
// and a 4-worker request loop on web, every client waiting up to 30 s for an answer, plus the
// kexec benchmark's 10 ms downtime poller on web. Per mode it reports the long-lived connections
// kept, the requests failed, the longest a client waited (a line on a kept connection, a
// request), the downtime the poller saw, and "loaded → up" (the guest's console from "kexec
// kernel loaded" to "all services started": the shutdown with its dump, the jump, the boot with
// its restore; not the fast method's in-guest kernel extraction, the same in both modes and the
// noisiest step under TCG).
//
// make image builds the binaries and certificates it packs (out/bin, out/tls); it prints a table
// and writes out/bench/carry.json.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/baton-init/baton/images"
	"github.com/baton-init/baton/qemu-tests/vm"
)

func main() {
	runs := flag.Int("runs", 2, "kexecs per mode")
	out := flag.String("o", "out/bench/carry.json", "JSON output")
	binDir := flag.String("bin", "out/bin", "init, initctl and the services (make image)")
	tlsDir := flag.String("tls-dir", "out/tls", "the remote API's certificates (make image)")
	verbose := flag.Bool("v", false, "console and harness output")
	flag.Parse()
	t := &vm.ProgramTB{Verbose: *verbose}
	t.Run("bench-carry", func() {
		e := setup(t, *binDir, *tlsDir)
		modes := []*mode{
			{ID: "keep", What: "carry.toml: web and stream keep_connections = true", Config: "/etc/baton/carry.toml", Keep: true},
			{ID: "no-keep", What: "the same with keep_connections = false", Config: "/etc/baton/no-keep.toml"},
		}
		bench(t, e, modes, *runs)
		report(t, e, modes, *runs, *out)
	})
}

// env is what both modes share: the kernel, the image, its boot disk, the host's initctl.
type env struct {
	vmlinuz         string
	initrd, disk    string
	initctl, tlsDir string
}

// setup builds the image (carry.toml, and the same without keep_connections) and its boot
// disk from copies of out/bin and out/tls: out/ may be rebuilt while the benchmark runs.
func setup(t *vm.ProgramTB, binDir, tlsDir string) *env {
	vmlinuz, modules := vm.Kernel(t, "amd64")
	dir := t.TempDir()
	e := &env{vmlinuz: vmlinuz, initctl: filepath.Join(dir, "bin/initctl"), tlsDir: filepath.Join(dir, "tls")}
	for _, c := range [][2]string{{binDir, filepath.Join(dir, "bin")}, {tlsDir, e.tlsDir}} {
		if err := vm.CopyPath(c[0], c[1]); err != nil {
			t.Fatalf("%v (make image builds it)", err)
		}
	}
	carry := filepath.Join(vm.RepoRoot, "qemu-tests/testdata/carry.toml")
	data, err := os.ReadFile(carry)
	if err != nil {
		t.Fatalf("%v", err)
	}
	const on, off = "keep_connections = true", "keep_connections = false"
	if n := strings.Count(string(data), on); n != 2 {
		t.Fatalf("%s: %d services with %q, want 2 (web and stream): the no-keep mode would not be the same appliance", carry, n, on)
	}
	noKeep := filepath.Join(dir, "no-keep.toml")
	if err := os.WriteFile(noKeep, []byte(strings.ReplaceAll(string(data), on, off)), 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	img, _, err := images.Build(images.Spec{Config: carry, Init: filepath.Join(dir, "bin/init"), BinDir: filepath.Join(dir, "bin"),
		Files:         map[string]string{"/etc/baton/carry.toml": carry, "/etc/baton/no-keep.toml": noKeep},
		KernelModules: []string{modules}, Carry: []string{"nls_cp437", "nls_utf8", "nls_ascii", "virtio_rng"}, TLSDir: e.tlsDir})
	if err != nil {
		t.Fatalf("image: %v", err)
	}
	if _, err := img.AddManifest(vmlinuz); err != nil {
		t.Fatalf("%v", err)
	}
	var buf bytes.Buffer
	if err := img.Write(&buf, "gzip"); err != nil {
		t.Fatalf("%v", err)
	}
	e.initrd = filepath.Join(dir, "initramfs.img")
	if err := os.WriteFile(e.initrd, buf.Bytes(), 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	// initctl kexec with no --kernel boots the running slot's kernel and image from /boot.
	e.disk = filepath.Join(dir, "disk.img")
	if err := images.BuildDisk(e.disk, images.DiskSpec{Bootloader: "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
		Kernel: vmlinuz, Initrd: e.initrd, Cmdline: "console=ttyS0 panic=-1 quiet"}); err != nil {
		t.Fatalf("boot disk: %v (make qemu installs systemd-boot-efi)", err)
	}
	return e
}

func report(t *vm.ProgramTB, e *env, modes []*mode, runs int, out string) {
	fmt.Printf("\ncarry benchmark: carry.toml appliance, Debian %s, QEMU %s, %d kexecs per mode (fast, same kernel), modes taking turns\n",
		filepath.Base(e.vmlinuz), accel(), runs)
	fmt.Printf("load per kexec: %d long-lived stream connections, a %d-worker web request loop (30 s client timeout), a 10 ms poller on web\n\n",
		streamConns, requestWorkers)
	fmt.Print(table(modes))
	data, err := json.MarshalIndent(modes, "", "  ")
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

func accel() string {
	if a := os.Getenv("BATON_QEMU_ACCEL"); a != "" {
		return strings.ToUpper(a)
	}
	return "TCG"
}
