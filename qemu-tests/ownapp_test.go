package qemutests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-init/baton/images"
	qvm "github.com/baton-init/baton/qemu-tests/vm"
)

// The own-appliance config: two of Debian's dynamically linked daemons, packed with their
// libraries from this machine. lighttpd serves on a socket baton holds (systemd's protocol),
// so an upgrade refuses nothing; SIGINT is its graceful stop (SIGTERM stops at once). nginx
// runs with Debian's own configuration and page, which need /var/lib/nginx and
// /var/log/nginx (state_dir, logs_dir) and the www-data user (lighttpd's user brings it).
const ownappConfig = `hostname = "ownapp"

[boot]
# virtio_rng: the remote API's TLS needs the kernel's random pool, slow to fill under TCG.
modules = ["virtio_net", "virtio_rng"]

[[network]]
interface = "eth0"
address = "10.0.2.15/24"
gateway = "10.0.2.2"

[control]
remote = "0.0.0.0:7000"

[[service]]
name = "lighttpd"
exec = ["/usr/sbin/lighttpd", "-D", "-f", "/etc/lighttpd/lighttpd.conf"]
user = "www-data"
stop_signal = "SIGINT"
files = ["lighttpd.conf:/etc/lighttpd/lighttpd.conf", "html:/srv/www"]
state_dir = "lighttpd"
  [[service.socket]]
  name = "http"
  listen = "tcp://0.0.0.0:8080"

[[service]]
name = "nginx"
exec = ["/usr/sbin/nginx", "-g", "daemon off;"]
files = ["/etc/nginx", "/var/www/html"]
state_dir = "nginx"
logs_dir = "nginx"
`

const lighttpdConfig = `server.systemd-socket-activation = "enable"
server.port = 8080
server.document-root = "/srv/www"
server.upload-dirs = ( "/var/lib/lighttpd" )
index-file.names = ( "index.html" )
mimetype.assign = ( ".html" => "text/html" )
`

const lighttpdPage = "hello from lighttpd in an appliance of its own\n"

// TestQEMUOwnAppliance builds an appliance the way a user would, from a config in a directory
// of its own, with Debian's lighttpd and nginx and everything they load; boots it; checks both
// serve through their own port forwards; upgrades lighttpd three times under a host-side
// poller (no request may fail); and powers off.
func TestQEMUOwnAppliance(t *testing.T) {
	for _, bin := range []string{"/usr/sbin/lighttpd", "/usr/sbin/nginx"} {
		if _, err := os.Stat(bin); err != nil {
			skipOrFail(t, "%s not installed (make deps installs lighttpd and nginx)", bin)
		}
	}
	vmlinuz, modules := kernel(t, "amd64")
	dir := t.TempDir()
	for name, data := range map[string]string{"baton.toml": ownappConfig, "lighttpd.conf": lighttpdConfig, "html/index.html": lighttpdPage} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(dir, "init"), "./init")
	build.Dir, build.Env = repoRoot, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./init: %v\n%s", err, out)
	}
	os.Symlink("init", filepath.Join(dir, "initctl")) // the host's initctl: the same binary
	img, _, err := images.Build(images.Spec{Config: filepath.Join(dir, "baton.toml"), Init: filepath.Join(dir, "init"),
		KernelModules: []string{modules}, TLSDir: filepath.Join(dir, "tls")})
	if err != nil {
		t.Fatalf("build the appliance: %v", err)
	}
	var buf bytes.Buffer
	if err := img.Write(&buf, "zstd"); err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initramfs.img")
	if err := os.WriteFile(initrd, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var report strings.Builder
	img.Report.Print(&report)
	t.Logf("packed:\n%s", report.String())
	t.Logf("image: %d entries, %.1f MiB of files, %.1f MiB compressed (zstd); %d libraries and interpreters",
		len(img.Paths()), float64(img.Report.Total())/(1<<20), float64(buf.Len())/(1<<20), countKinds(img, "library", "interpreter"))

	vm := qvm.Boot(t, qvm.BootOptions{Kernel: vmlinuz, Initrd: initrd, Forward: []int{80, 8080, controlPort},
		Initctl: filepath.Join(dir, "initctl"), TLSDir: filepath.Join(dir, "tls"), RNG: true})
	vm.WaitFor(`all services started`, 120*time.Second)
	if body := vm.Get(t, 80, "/"); !strings.Contains(body, "Welcome to nginx!") {
		t.Errorf("nginx answered %q, want Debian's welcome page", body)
	}
	if body := vm.Get(t, 8080, "/"); body != lighttpdPage {
		t.Errorf("lighttpd answered %q, want %q", body, lighttpdPage)
	}

	poller := vm.Poll(8080, qvm.PollOptions{})
	time.Sleep(300 * time.Millisecond) // some answers before the first upgrade
	pids := map[string]bool{}
	for i := 0; i < 3; i++ {
		out, code := vm.Initctl(t, "upgrade", "lighttpd")
		if code != 0 {
			t.Fatalf("upgrade %d of lighttpd: exit %d: %s", i+1, code, out)
		}
		pids[out] = true
	}
	time.Sleep(300 * time.Millisecond)
	r := poller.End()
	t.Logf("host-side poller during 3 upgrades of lighttpd: %s", r)
	if len(r.Failed) != 0 || r.Answers < 50 {
		t.Errorf("lighttpd during 3 upgrades: %s; want no failure and at least 50 answers", r)
	}
	if len(pids) != 3 {
		t.Errorf("upgrades reported %v, want three different pid changes", pids)
	}
	if body := vm.Get(t, 8080, "/"); body != lighttpdPage {
		t.Errorf("after the upgrades lighttpd answered %q", body)
	}
	out, _ := vm.Initctl(t, "status")
	for _, name := range []string{"lighttpd", "nginx"} {
		if !strings.Contains(out, name) || !strings.Contains(lineOf(out, name), "running") {
			t.Errorf("status does not show %s running:\n%s", name, out)
		}
	}
	if out, code := vm.Initctl(t, "poweroff"); code != 0 {
		t.Fatalf("poweroff: %d %s", code, out)
	}
	if code := vm.WaitExit(60 * time.Second); code != 0 {
		t.Errorf("QEMU exited %d after poweroff, want 0", code)
	}
}

func countKinds(img *images.Initramfs, kinds ...string) int {
	n := 0
	for _, g := range img.Report.Groups {
		for _, it := range g.Items {
			for _, k := range kinds {
				if it.Kind == k && it.With == "" {
					n++
				}
			}
		}
	}
	return n
}

func lineOf(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix+" ") {
			return l
		}
	}
	return fmt.Sprintf("(no line for %s)", prefix)
}
