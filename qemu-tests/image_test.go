package qemutests

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/baton-init/baton/images"
)

var (
	imageOnce sync.Once
	imagePath string
	diskPath  string // the boot disk: ESP with systemd-boot, both kernels, the test image
	imageErr  error
	// hostBin holds the binaries built for the test image, initctl among them; hostTLS the
	// client's half of the remote API's certificates.
	hostBin = filepath.Join(repoRoot, "out/qemu-tests/bin")
	hostTLS = filepath.Join(repoRoot, "out/qemu-tests/tls")
)

// testImage builds, once per test run, the appliance the QEMU tests boot: the init binary,
// the demo web and stream services and testsvc, the test config, a broken config to boot with
// on demand, squashfs carried but not loaded (for the on-demand module test), and modules for
// both Debian kernels; and the boot disk holding both kernels and the image.
func testImage(t *testing.T, modules string) (initrd, disk string) {
	t.Helper()
	_, cloudModules := kernel(t, "cloud-amd64")
	bootloader := "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
	if _, err := os.Stat(bootloader); err != nil {
		skipOrFail(t, "no %s (Debian package systemd-boot-efi) for the boot disk", bootloader)
	}
	imageOnce.Do(func() {
		dir := filepath.Join(repoRoot, "out/qemu-tests")
		if imageErr = os.MkdirAll(filepath.Join(dir, "bin"), 0o755); imageErr != nil {
			return
		}
		// initctl is the init binary under another name; this one runs on the host. baton-exec
		// beside init goes into the image as the exec shim, as with make image.
		for name, pkg := range map[string]string{"init": "./init", "baton-exec": "./cmd/baton-exec", "initctl": "./init",
			"web": "./examples/web", "stream": "./examples/stream", "testsvc": "./qemu-tests/testsvc"} {
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=test",
				"-o", filepath.Join(dir, "bin", name), pkg)
			cmd.Dir = repoRoot
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				imageErr = &buildError{pkg, err, out}
				return
			}
		}
		img, _, err := images.Build(testSpec(dir, modules, cloudModules))
		if err != nil {
			imageErr = err
			return
		}
		generic, _ := filepath.Glob(filepath.Join(repoRoot, "out/kernel/amd64/boot/vmlinuz-*"))
		cloud, _ := filepath.Glob(filepath.Join(repoRoot, "out/kernel/cloud-amd64/boot/vmlinuz-*"))
		if _, imageErr = img.AddManifest(generic[0]); imageErr != nil {
			return
		}
		var buf bytes.Buffer
		if imageErr = img.Write(&buf, "gzip"); imageErr != nil {
			return
		}
		imagePath = filepath.Join(dir, "initramfs.img")
		if imageErr = os.WriteFile(imagePath, buf.Bytes(), 0o644); imageErr != nil {
			return
		}
		// Two kernels no method can boot, for the kexec test's refusals.
		truncated, unknown, err := badKernels(dir, generic[0])
		if err != nil {
			imageErr = err
			return
		}
		diskPath = filepath.Join(dir, "disk.img")
		imageErr = images.BuildDisk(diskPath, images.DiskSpec{Bootloader: bootloader, Kernel: generic[0], Initrd: imagePath,
			Cmdline: "console=ttyS0 panic=-1", Files: map[string]string{"/vmlinuz-cloud": cloud[0],
				"/vmlinuz-truncated": truncated, "/vmlinuz-unknown": unknown}})
	})
	if imageErr != nil {
		t.Fatalf("build test image: %v", imageErr)
	}
	return imagePath, diskPath
}

// badKernels writes Debian's kernel cut in half, and the same kernel with its payload's magic
// overwritten (a compression nobody knows).
func badKernels(dir, vmlinuz string) (truncated, unknown string, err error) {
	k, err := os.ReadFile(vmlinuz)
	if err != nil {
		return "", "", err
	}
	truncated, unknown = filepath.Join(dir, "vmlinuz-truncated"), filepath.Join(dir, "vmlinuz-unknown")
	if err := os.WriteFile(truncated, k[:len(k)/2], 0o644); err != nil {
		return "", "", err
	}
	u := append([]byte(nil), k...)
	off := (int(u[0x1f1])+1)*512 + int(binary.LittleEndian.Uint32(u[0x248:]))
	copy(u[off:], []byte{0xde, 0xad, 0xbe, 0xef, 0, 0})
	return truncated, unknown, os.WriteFile(unknown, u, 0o644)
}

// testSpec is the test appliance: its config, the binaries built in dir/bin, modules for both
// kernels. A test that ships an update changes a file of it (Files).
func testSpec(dir, modules, cloudModules string) images.Spec {
	return images.Spec{
		Config: filepath.Join(repoRoot, "qemu-tests/testdata/appliance.toml"),
		Init:   filepath.Join(dir, "bin/init"),
		BinDir: filepath.Join(dir, "bin"),
		Files: map[string]string{"/etc/baton/broken.toml": filepath.Join(repoRoot, "qemu-tests/testdata/broken.toml"),
			"/etc/baton/dhcp.toml":  filepath.Join(repoRoot, "qemu-tests/testdata/dhcp.toml"),
			"/etc/baton/carry.toml": filepath.Join(repoRoot, "qemu-tests/testdata/carry.toml")},
		KernelModules: []string{modules, cloudModules},
		// virtio_rng is carried for the DHCP boot, which attaches a virtio-rng device.
		// nf_tables and crc32c_generic for carry.toml (TestQEMUKeepConnections).
		Carry:  []string{"squashfs", "nls_cp437", "nls_utf8", "nls_ascii", "virtio_rng", "nf_tables", "crc32c_generic"},
		TLSDir: filepath.Join(dir, "tls"),
	}
}

type buildError struct {
	pkg string
	err error
	out []byte
}

func (e *buildError) Error() string {
	return "go build " + e.pkg + ": " + e.err.Error() + "\n" + string(e.out)
}
