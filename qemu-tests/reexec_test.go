package qemutests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	qvm "github.com/baton-init/baton/qemu-tests/vm"
)

// TestQEMUReexec replaces PID 1 with another build of itself through the remote API while a
// host-side poller requests the web service: no request fails, web keeps its pid, initctl
// version names the new build, and a kexec afterwards still works (the restored state has
// what it needs: the config, the boot slot, the command line).
func TestQEMUReexec(t *testing.T) {
	t.Parallel()
	vmlinuz, modules := kernel(t, "amd64")
	initrd, disk := testImage(t, modules)
	v2 := filepath.Join(t.TempDir(), "init-v2")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=v2-reexec", "-o", v2, "./init")
	build.Dir, build.Env = repoRoot, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build init-v2: %v\n%s", err, out)
	}
	vm := Boot(t, BootOptions{Kernel: vmlinuz, Initrd: initrd, Disk: disk, Forward: []int{webPort, testPort, controlPort}})
	vm.WaitFor(`baton: all services started`, bootTimeout)
	vm.Get(t, webPort, "/")
	webPid := func(t *testing.T) int {
		out, code := vm.Initctl(t, "status", "web", "--json")
		var st struct{ Pid int }
		if i := strings.Index(out, "{"); code != 0 || i < 0 || json.Unmarshal([]byte(out[i:]), &st) != nil {
			t.Fatalf("status web: %d\n%s", code, out)
		}
		return st.Pid
	}
	before := webPid(t)

	vm.Run(t, "reexec into another build under the poller", func(t *testing.T) {
		p := vm.Poll(webPort, qvm.PollOptions{})
		p.WaitAnswers(t, 1, 30*time.Second)
		out, code := vm.Initctl(t, "reexec", "--binary", v2, "--timeout", "3m")
		if code != 0 || !strings.Contains(out, "services kept") {
			t.Fatalf("reexec --binary: exit %d\n%s", code, out)
		}
		vm.WaitFor(`baton: reexec done`, 60*time.Second)
		if out, _ := vm.Initctl(t, "version"); !strings.Contains(out, "baton v2-reexec") || !strings.Contains(out, "pid 1, pid1 mode") {
			t.Errorf("version after reexec:\n%s", out)
		}
		vm.Get(t, webPort, "/")
		r := p.End()
		t.Logf("poller during the reexec: %s", r)
		if len(r.Failed) != 0 {
			t.Errorf("web failed requests during the reexec: %s", r)
		}
		if after := webPid(t); after != before {
			t.Errorf("web pid %d after the reexec, %d before", after, before)
		}
	})

	vm.Run(t, "kexec after the reexec", func(t *testing.T) {
		out, code := vm.Initctl(t, "kexec", "--append", "baton.test.marker=after-reexec")
		if code != 0 {
			t.Fatalf("kexec: %d\n%s", code, out)
		}
		vm.WaitFor(`kexec_core: Starting new kernel`, 120*time.Second)
		vm.WaitFor(`baton: all services started`, bootTimeout)
		var i struct{ Cmdline string }
		mustJSON(t, vm.Get(t, testPort, "/info"), &i)
		if !strings.Contains(i.Cmdline, "baton.test.marker=after-reexec") {
			t.Errorf("the kexec'd kernel's command line %q lacks the marker", i.Cmdline)
		}
	})

	vm.Initctl(t, "poweroff")
	if code := vm.WaitExit(60 * time.Second); code != 0 {
		t.Errorf("QEMU exited %d after poweroff", code)
	}
}
