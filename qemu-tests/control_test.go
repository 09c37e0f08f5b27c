package qemutests

import (
	"encoding/json"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const controlPort = 7000

// initctl runs the host's initctl against the guest's remote API (mutual TLS through the port
// forward) and returns its output and exit code.
func (vm *VM) initctl(t *testing.T, args ...string) (string, int) {
	t.Helper()
	full := append([]string{"--remote", "127.0.0.1:" + strconv.Itoa(vm.ports[controlPort]), "--tls-dir", hostTLS}, args...)
	cmd := exec.Command(hostBin+"/initctl", full...)
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

// TestQEMUControl drives the booted appliance from the host with initctl: list, restart a
// service, read its logs and the boot timeline, then power off.
func TestQEMUControl(t *testing.T) {
	t.Parallel()
	vmlinuz, modules := kernel(t, "amd64")
	vm := Boot(t, BootOptions{Kernel: vmlinuz, Initrd: testImage(t, modules), Forward: []int{webPort, controlPort}})
	vm.WaitFor(`baton: all services started`, bootTimeout)
	vm.Get(t, webPort, "/") // the forward is up and web answers

	out, code := vm.initctl(t, "status")
	if code != 0 || !regexp.MustCompile(`(?m)^web\s+running\s+\d+`).MatchString(out) || !regexp.MustCompile(`(?m)^testsvc\s+running`).MatchString(out) {
		t.Fatalf("status: %d\n%s", code, out)
	}
	var before struct {
		Pid    int
		Cgroup string
		Status string
	}
	out, _ = vm.initctl(t, "status", "web", "--json")
	if err := json.Unmarshal([]byte(out), &before); err != nil {
		t.Fatalf("status --json: %v", err)
	}
	if before.Cgroup != "/sys/fs/cgroup/baton/web" || before.Status != "serving on :80" {
		t.Errorf("web: cgroup %q, status %q", before.Cgroup, before.Status)
	}

	start := time.Now()
	out, code = vm.initctl(t, "restart", "web")
	t.Logf("initctl restart web returned after %v (ready again)", time.Since(start))
	if code != 0 || !strings.Contains(out, "web: running in") {
		t.Fatalf("restart: %d %s", code, out)
	}
	body := vm.Get(t, webPort, "/")
	if strings.Contains(body, " pid "+strconv.Itoa(before.Pid)+" ") {
		t.Errorf("web still answers from the old pid %d: %q", before.Pid, body)
	}

	out, code = vm.initctl(t, "logs", "web")
	if code != 0 || strings.Count(out, "listening on :80") != 2 {
		t.Errorf("logs: %d, want two 'listening' lines (before and after the restart):\n%s", code, out)
	}
	out, code = vm.initctl(t, "analyze")
	for _, want := range []string{"kernel ", "load kernel modules", "service web", "start services"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("analyze lacks %q:\n%s", want, out)
		}
	}
	if out, code = vm.initctl(t, "restart", "nope"); code != 3 {
		t.Errorf("restart nope: exit %d, want 3 (unknown service)\n%s", code, out)
	}

	if out, code = vm.initctl(t, "poweroff"); code != 0 {
		t.Fatalf("poweroff: %d %s", code, out)
	}
	vm.WaitFor(`shutdown complete action=poweroff`, 30*time.Second)
	if code := vm.WaitExit(30 * time.Second); code != 0 {
		t.Errorf("QEMU exited %d after initctl poweroff, want 0", code)
	}
}
