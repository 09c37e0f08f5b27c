package qemutests

import (
	"bytes"
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
	imageErr  error
	// hostBin holds the binaries built for the test image, initctl among them; hostTLS the
	// client's half of the remote API's certificates.
	hostBin = filepath.Join(repoRoot, "out/qemu-tests/bin")
	hostTLS = filepath.Join(repoRoot, "out/qemu-tests/tls")
)

// testImage builds, once per test run, the appliance the QEMU tests boot: the init binary,
// the demo web service and testsvc, the test config, a broken config to boot with on demand,
// and squashfs carried but not loaded, for the on-demand module test.
func testImage(t *testing.T, modules string) string {
	t.Helper()
	imageOnce.Do(func() {
		dir := filepath.Join(repoRoot, "out/qemu-tests")
		if imageErr = os.MkdirAll(filepath.Join(dir, "bin"), 0o755); imageErr != nil {
			return
		}
		// initctl is the init binary under another name; this one runs on the host.
		for name, pkg := range map[string]string{"init": "./init", "initctl": "./init", "web": "./examples/web", "stream": "./examples/stream", "testsvc": "./qemu-tests/testsvc"} {
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=test",
				"-o", filepath.Join(dir, "bin", name), pkg)
			cmd.Dir = repoRoot
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				imageErr = &buildError{pkg, err, out}
				return
			}
		}
		img, _, err := images.Build(images.Spec{
			Config:        filepath.Join(repoRoot, "qemu-tests/testdata/appliance.toml"),
			Init:          filepath.Join(dir, "bin/init"),
			BinDir:        filepath.Join(dir, "bin"),
			Files:         map[string]string{"/etc/baton/broken.toml": filepath.Join(repoRoot, "qemu-tests/testdata/broken.toml")},
			KernelModules: []string{modules},
			Carry:         []string{"squashfs"},
			TLSDir:        filepath.Join(dir, "tls"),
		})
		if err != nil {
			imageErr = err
			return
		}
		var buf bytes.Buffer
		if imageErr = img.Write(&buf, "gzip"); imageErr != nil {
			return
		}
		imagePath = filepath.Join(dir, "initramfs.img")
		imageErr = os.WriteFile(imagePath, buf.Bytes(), 0o644)
	})
	if imageErr != nil {
		t.Fatalf("build test image: %v", imageErr)
	}
	return imagePath
}

type buildError struct {
	pkg string
	err error
	out []byte
}

func (e *buildError) Error() string {
	return "go build " + e.pkg + ": " + e.err.Error() + "\n" + string(e.out)
}
